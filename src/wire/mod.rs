//! Packet formats: IPv4/IPv6, TCP/UDP, checksums, and text scanning for the helpers.
//!
//! Views in the style of smoltcp's `wire`: a view wraps a buffer, `new_checked` validates
//! every length the accessors rely on, and accessors never index out of bounds (they read
//! through `get`, so even a view built with `new_unchecked` over a short buffer cannot
//! panic; it yields zeros instead). Nothing here allocates.

pub mod checksum;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod text;
pub mod udp;

use core::fmt;
use core::net::IpAddr;

use crate::model::{IPPROTO_TCP, IPPROTO_UDP};

/// Transport-layer view of a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp { seq: u32, flags: u8 },
    Udp,
}

/// Why a buffer is not a packet we can look into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before a header or a length field says it should.
    Truncated,
    /// The IP version nibble is neither 4 nor 6.
    BadVersion(u8),
    /// A header length field is impossible (IHL < 5, TCP data offset < 5, UDP length < 8).
    BadHeaderLen,
    /// The IP total / payload length disagrees with the header or the buffer.
    BadLength,
    /// An IP fragment that does not carry a complete transport segment.
    Fragment,
    /// Too many IPv6 extension headers (our walk is bounded).
    TooManyExtensionHeaders,
    /// Transport protocol is neither TCP nor UDP (or an IPv6 "no next header").
    UnsupportedProtocol(u8),
    /// Text did not have the expected syntax.
    Syntax,
    /// A number did not fit its type.
    Overflow,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated packet"),
            Error::BadVersion(v) => write!(f, "bad IP version {v}"),
            Error::BadHeaderLen => f.write_str("bad header length"),
            Error::BadLength => f.write_str("bad length field"),
            Error::Fragment => f.write_str("fragment without a complete transport segment"),
            Error::TooManyExtensionHeaders => f.write_str("too many IPv6 extension headers"),
            Error::UnsupportedProtocol(p) => write!(f, "unsupported protocol {p}"),
            Error::Syntax => f.write_str("syntax error"),
            Error::Overflow => f.write_str("number out of range"),
        }
    }
}

impl core::error::Error for Error {}

/// Big-endian u16 at `off`, or 0 when out of range (views validate lengths up front,
/// so the fallback is only reachable through `new_unchecked` on a bad buffer).
#[inline]
pub(crate) fn be16(buf: &[u8], off: usize) -> u16 {
    match buf.get(off..off.wrapping_add(2)) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn be32(buf: &[u8], off: usize) -> u32 {
    match buf.get(off..off.wrapping_add(4)) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn byte(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
}

#[inline]
pub(crate) fn set_be16(buf: &mut [u8], off: usize, v: u16) {
    if let Some(s) = buf.get_mut(off..off.wrapping_add(2)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
pub(crate) fn set_be32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(s) = buf.get_mut(off..off.wrapping_add(4)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
pub(crate) fn array<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = buf.get(off..off.wrapping_add(N)) {
        out.copy_from_slice(s);
    }
    out
}

/// A queued L3 packet taken apart down to the application payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dissected<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub transport: Transport,
    /// Offset of the TCP/UDP header in the L3 packet.
    pub l4_offset: usize,
    /// Offset of the application payload in the L3 packet.
    pub payload_offset: usize,
    /// The application payload, bounded by the IP (and UDP) length fields, not by the
    /// buffer: link-layer padding and capture trailers are excluded.
    pub payload: &'a [u8],
}

/// Take an IPv4 or IPv6 packet (chosen by the version nibble) apart down to the TCP or UDP
/// payload.
pub fn dissect(l3_packet: &[u8]) -> Result<Dissected<'_>, Error> {
    let first = *l3_packet.first().ok_or(Error::Truncated)?;
    let (src, dst, proto, l4_offset, l3_end) = match first >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(l3_packet)?;
            if ip.frag_offset() != 0 || ip.more_frags() {
                return Err(Error::Fragment);
            }
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.protocol(),
                ip.header_len(),
                usize::from(ip.total_len()),
            )
        }
        6 => {
            let ip = ipv6::Packet::new_checked(l3_packet)?;
            let (proto, off) = ip.upper_layer()?;
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                proto,
                off,
                ipv6::HEADER_LEN + usize::from(ip.payload_len()),
            )
        }
        v => return Err(Error::BadVersion(v)),
    };
    let l4 = l3_packet.get(l4_offset..l3_end).ok_or(Error::BadLength)?;
    match proto {
        IPPROTO_TCP => {
            let tcp = tcp::Packet::new_checked(l4)?;
            let hl = tcp.header_len();
            Ok(Dissected {
                src,
                dst,
                proto,
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                transport: Transport::Tcp {
                    seq: tcp.seq_number(),
                    flags: tcp.flags(),
                },
                l4_offset,
                payload_offset: l4_offset + hl,
                payload: l4.get(hl..).ok_or(Error::Truncated)?,
            })
        }
        IPPROTO_UDP => {
            let udp = udp::Packet::new_checked(l4)?;
            let end = usize::from(udp.len());
            Ok(Dissected {
                src,
                dst,
                proto,
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
                transport: Transport::Udp,
                l4_offset,
                payload_offset: l4_offset + udp::HEADER_LEN,
                payload: l4.get(udp::HEADER_LEN..end).ok_or(Error::BadLength)?,
            })
        }
        p => Err(Error::UnsupportedProtocol(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn dissect_ipv4_tcp_ignores_padding() {
        let seg = tcp::tests::build(40000, 21, 77, tcp::flags::ACK, b"USER x\r\n");
        let mut pkt = ipv4::tests::build([10, 0, 0, 1], [10, 0, 0, 2], 6, &seg);
        pkt.extend_from_slice(&[0; 6]);
        let d = dissect(&pkt).unwrap();
        assert_eq!(d.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(d.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!((d.proto, d.src_port, d.dst_port), (6, 40000, 21));
        assert_eq!(
            d.transport,
            Transport::Tcp {
                seq: 77,
                flags: tcp::flags::ACK
            }
        );
        assert_eq!((d.l4_offset, d.payload_offset), (20, 40));
        assert_eq!(d.payload, b"USER x\r\n");
    }

    #[test]
    fn dissect_ipv6_udp_after_extension_header() {
        let dgram = udp::tests::build(5060, 5060, b"OPTIONS");
        let ext = [17, 0, 1, 4, 0, 0, 0, 0];
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let pkt = ipv6::tests::build(src, dst, 0, &ext, &dgram);
        let d = dissect(&pkt).unwrap();
        assert_eq!((d.proto, d.transport), (17, Transport::Udp));
        assert_eq!((d.l4_offset, d.payload_offset), (48, 56));
        assert_eq!(d.payload, b"OPTIONS");
        assert_eq!(d.src, IpAddr::V6(src));
    }

    #[test]
    fn dissect_errors() {
        assert_eq!(dissect(&[]), Err(Error::Truncated));
        assert_eq!(dissect(&[0x50; 40]), Err(Error::BadVersion(5)));
        let icmp = ipv4::tests::build([1, 1, 1, 1], [2, 2, 2, 2], 1, &[8, 0, 0, 0]);
        assert_eq!(dissect(&icmp), Err(Error::UnsupportedProtocol(1)));
        let mut seg = tcp::tests::build(1, 21, 0, 0, b"x");
        seg[12] = 0xf0; // 60-byte TCP header inside a 21-byte segment
        let pkt = ipv4::tests::build([1, 1, 1, 1], [2, 2, 2, 2], 6, &seg);
        assert_eq!(dissect(&pkt), Err(Error::Truncated));
        let seg = tcp::tests::build(1, 21, 0, 0, b"x");
        let mut pkt = ipv4::tests::build([1, 1, 1, 1], [2, 2, 2, 2], 6, &seg);
        pkt[6] = 0x20; // MF
        assert_eq!(dissect(&pkt), Err(Error::Fragment));
        pkt[6] = 0x00;
        pkt[7] = 0x10; // offset 128
        assert_eq!(dissect(&pkt), Err(Error::Fragment));
        let short_udp = ipv4::tests::build([1, 1, 1, 1], [2, 2, 2, 2], 17, &[0, 1, 0, 2, 0, 4]);
        assert_eq!(dissect(&short_udp), Err(Error::Truncated));
    }

    #[test]
    fn dissect_never_panics_on_prefixes() {
        let seg = tcp::tests::build(40000, 21, 77, tcp::flags::ACK, b"PORT 1,2,3,4,5,6\r\n");
        let pkt = ipv4::tests::build([10, 0, 0, 1], [10, 0, 0, 2], 6, &seg);
        for n in 0..pkt.len() {
            assert!(dissect(&pkt[..n]).is_err());
        }
        let pkt = ipv6::tests::build(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 6, &[], &seg);
        for n in 0..pkt.len() {
            assert!(dissect(&pkt[..n]).is_err());
        }
        assert!(dissect(&pkt).is_ok());
    }
}
