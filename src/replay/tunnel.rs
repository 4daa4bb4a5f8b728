//! Tunnels a router terminates, opened the way its tunnel devices open them, so that
//! replay hands the helpers the packet inside (what conntrack sees when the packet comes
//! out of the tunnel device):
//!
//! - GRE (RFC 2784, with RFC 2890's key and sequence number) carrying IPv4, IPv6 or an
//!   Ethernet frame (transparent Ethernet bridging, a gretap device); and version 1,
//!   PPTP's enhanced GRE (RFC 2637) carrying PPP. Like Linux's GRE receive path, a
//!   version-0 header with the routing bit (RFC 1701 source routes) is not opened.
//! - IP-in-IP: IPv4 or IPv6 inside IPv4 or IPv6 (protocols 4 and 41: ipip, sit, ip6tnl).
//! - GTP-U G-PDUs (3GPP TS 29.281) to UDP port 2152, with optional fields and extension
//!   headers.
//!
//! Views in the style of [`crate::wire`]: `new_checked` validates every length the
//! accessors use, accessors read through `get`, and the inner packet is a slice of the
//! outer one (nothing is copied). A header that does not check out leaves the packet
//! as it is, as the tunnel device would drop it and conntrack only ever sees the outer
//! packet.

use crate::model::IPPROTO_UDP;
use crate::wire::{self, Error, be16, byte, ipv4, ipv6};

/// IP protocol numbers of the IP-in-IP encapsulations and of GRE.
pub mod protocol {
    /// IPv4 inside (RFC 2003; IPv6's next header 4 for 4in6, RFC 2473).
    pub const IPV4: u8 = 4;
    /// IPv6 inside (RFC 4213's 6in4; RFC 2473's 6in6).
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
}

/// EtherTypes a GRE header's protocol type names.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    /// Transparent Ethernet bridging: an Ethernet frame inside.
    pub const TEB: u16 = 0x6558;
    pub const PPP: u16 = 0x880b;
}

/// UDP port GTP-U G-PDUs are sent to (TS 29.281 §4.4.2.3).
pub const GTP_U_PORT: u16 = 2152;

/// Which kind of tunnel a packet came out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gre,
    IpInIp,
    GtpU,
}

/// The packet inside a tunnel packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner<'a> {
    pub kind: Kind,
    /// An IPv4 or IPv6 packet (its version nibble checked, nothing more: the caller
    /// treats it as any captured packet).
    pub packet: &'a [u8],
}

/// The packet inside `packet` if it is a tunnel packet of a kind we open, else `None`
/// (and the packet is what conntrack sees). `packet` must not be an IP fragment: the
/// caller reassembles first, as the kernel does before the tunnel device sees it.
pub fn decapsulate(packet: &[u8]) -> Option<Inner<'_>> {
    let (proto, payload) = ip_payload(packet).ok()?;
    let (kind, inner) = match proto {
        protocol::IPV4 => (Kind::IpInIp, ip_version(payload, 4)?),
        protocol::IPV6 => (Kind::IpInIp, ip_version(payload, 6)?),
        protocol::GRE => (Kind::Gre, gre::Packet::new_checked(payload).ok()?.inner()?),
        IPPROTO_UDP => {
            let d = wire::dissect(packet).ok()?;
            if d.dst_port != GTP_U_PORT {
                return None;
            }
            let pdu = gtpu::Packet::new_checked(d.payload).ok()?.g_pdu()?;
            (
                Kind::GtpU,
                ip_version(pdu, 4).or_else(|| ip_version(pdu, 6))?,
            )
        }
        _ => return None,
    };
    Some(Inner {
        kind,
        packet: inner,
    })
}

/// `packet` if it starts with IP version `v`.
fn ip_version(packet: &[u8], v: u8) -> Option<&[u8]> {
    (packet.first().map(|b| b >> 4) == Some(v)).then_some(packet)
}

/// The protocol and payload of an unfragmented IP packet (IPv6: after its extension
/// headers), bounded by its length fields.
fn ip_payload(packet: &[u8]) -> Result<(u8, &[u8]), Error> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = ipv4::Packet::new_checked(packet)?;
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(Error::Fragment);
            }
            let payload = packet.get(ip.header_len()..usize::from(ip.total_len()));
            Ok((ip.protocol(), payload.ok_or(Error::Truncated)?))
        }
        Some(6) => {
            let ip = ipv6::Packet::new_checked(packet)?;
            let (proto, off) = ip.upper_layer()?;
            let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            Ok((proto, packet.get(off..end).ok_or(Error::Truncated)?))
        }
        Some(v) => Err(Error::BadVersion(v)),
        None => Err(Error::Truncated),
    }
}

/// GRE header view (RFC 2784, RFC 2890; version 1: RFC 2637 §4.1).
pub mod gre {
    use super::{Error, be16, ethertype};
    use crate::replay::capture;

    /// Flags and version, protocol type.
    pub const BASE_LEN: usize = 4;

    mod flag {
        pub const CHECKSUM: u16 = 0x8000;
        pub const ROUTING: u16 = 0x4000;
        pub const KEY: u16 = 0x2000;
        pub const SEQUENCE: u16 = 0x1000;
        /// Version 1 only: an acknowledgment number follows.
        pub const ACK: u16 = 0x0080;
        pub const VERSION: u16 = 0x0007;
    }

    /// Each optional field (checksum with its reserved half, key, sequence number,
    /// acknowledgment number) is 4 bytes.
    const FIELD_LEN: usize = 4;

    /// PPP's address and control bytes (RFC 1662), which may be left out (ACFC).
    const PPP_ADDRESS_CONTROL: [u8; 2] = [0xff, 0x03];
    const PPP_IPV4: u16 = 0x0021;
    const PPP_IPV6: u16 = 0x0057;

    #[derive(Debug, Clone, Copy)]
    pub struct Packet<T: AsRef<[u8]>> {
        buffer: T,
    }

    impl<T: AsRef<[u8]>> Packet<T> {
        pub const fn new_unchecked(buffer: T) -> Packet<T> {
            Packet { buffer }
        }

        pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
            let p = Packet::new_unchecked(buffer);
            p.check_len()?;
            Ok(p)
        }

        /// Validate the version and flags and that the buffer holds the header (and,
        /// for version 1, the payload length the key field gives).
        pub fn check_len(&self) -> Result<(), Error> {
            let len = self.buffer.as_ref().len();
            if len < BASE_LEN {
                return Err(Error::Truncated);
            }
            match self.version() {
                0 if self.flags() & flag::ROUTING == 0 => {}
                // Enhanced GRE: key present (payload length, call id), no checksum or
                // routing, PPP inside.
                1 if self.flags() & (flag::CHECKSUM | flag::ROUTING | flag::KEY) == flag::KEY
                    && self.protocol_type() == ethertype::PPP => {}
                0 | 1 => return Err(Error::BadHeaderLen),
                v => return Err(Error::BadVersion(v)),
            }
            let hl = self.header_len();
            if len < hl {
                return Err(Error::Truncated);
            }
            if self.version() == 1 && len < hl + usize::from(self.ppp_payload_len()) {
                return Err(Error::BadLength);
            }
            Ok(())
        }

        fn buf(&self) -> &[u8] {
            self.buffer.as_ref()
        }

        fn flags(&self) -> u16 {
            be16(self.buf(), 0)
        }

        pub fn version(&self) -> u8 {
            (self.flags() & flag::VERSION) as u8
        }

        pub fn protocol_type(&self) -> u16 {
            be16(self.buf(), 2)
        }

        pub fn header_len(&self) -> usize {
            let f = self.flags();
            let fields = usize::from(f & flag::CHECKSUM != 0)
                + usize::from(f & flag::KEY != 0)
                + usize::from(f & flag::SEQUENCE != 0)
                + usize::from(self.version() == 1 && f & flag::ACK != 0);
            BASE_LEN + fields * FIELD_LEN
        }

        /// Version 1: the PPP payload's length (the key field's first half).
        pub fn ppp_payload_len(&self) -> u16 {
            be16(self.buf(), BASE_LEN)
        }
    }

    impl<'a> Packet<&'a [u8]> {
        /// Everything after the header (version 1: as long as the key field says).
        pub fn payload(&self) -> &'a [u8] {
            let start = self.header_len();
            let end = if self.version() == 1 {
                start.saturating_add(usize::from(self.ppp_payload_len()))
            } else {
                self.buffer.len()
            };
            self.buffer.get(start..end).unwrap_or(&[])
        }

        /// The IP packet inside, if the protocol type (or PPP's protocol) is IPv4 or
        /// IPv6, or an Ethernet frame carrying one.
        pub fn inner(&self) -> Option<&'a [u8]> {
            let payload = self.payload();
            match self.protocol_type() {
                ethertype::IPV4 => super::ip_version(payload, 4),
                ethertype::IPV6 => super::ip_version(payload, 6),
                ethertype::TEB => capture::l3(capture::LINKTYPE_ETHERNET, payload),
                ethertype::PPP => ppp_ip(payload),
                _ => None,
            }
        }
    }

    /// The IP packet in a PPP frame (RFC 1661), with or without address and control
    /// bytes and with a one-byte (compressed, RFC 1661 §6.5) or two-byte protocol.
    fn ppp_ip(frame: &[u8]) -> Option<&[u8]> {
        let frame = frame
            .strip_prefix(&PPP_ADDRESS_CONTROL[..])
            .unwrap_or(frame);
        // A compressed protocol is its odd low byte alone.
        let (proto, rest) = match frame.first()? {
            b if b & 1 == 1 => (u16::from(*b), frame.get(1..)?),
            _ => (be16(frame, 0), frame.get(2..)?),
        };
        match proto {
            PPP_IPV4 => super::ip_version(rest, 4),
            PPP_IPV6 => super::ip_version(rest, 6),
            _ => None,
        }
    }
}

/// GTP-U header view (3GPP TS 29.281 §5).
pub mod gtpu {
    use super::{Error, be16, byte};

    /// Flags, message type, length, TEID.
    pub const HEADER_LEN: usize = 8;
    /// Sequence number, N-PDU number, next extension header type: present when any of
    /// the E, S, PN flags is set.
    pub const OPTIONAL_LEN: usize = 4;
    /// Extension headers we step over; real G-PDUs carry one or two.
    pub const MAX_EXTENSION_HEADERS: usize = 8;

    /// GTP version 1, protocol type GTP (not GTP').
    const VERSION_1_GTP: u8 = 0x30;
    const VERSION_PT_MASK: u8 = 0xf0;
    /// E (extension header), S (sequence number), PN (N-PDU number).
    const OPTIONAL_FLAGS: u8 = 0x07;
    /// Message type of a G-PDU (a user packet).
    pub const G_PDU: u8 = 0xff;
    /// An extension header's length unit.
    const EXTENSION_UNIT: usize = 4;

    #[derive(Debug, Clone, Copy)]
    pub struct Packet<T: AsRef<[u8]>> {
        buffer: T,
    }

    impl<T: AsRef<[u8]>> Packet<T> {
        pub const fn new_unchecked(buffer: T) -> Packet<T> {
            Packet { buffer }
        }

        pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
            let p = Packet::new_unchecked(buffer);
            p.check_len()?;
            Ok(p)
        }

        /// Validate version and protocol type, that the buffer holds the length field's
        /// bytes, and that the extension header chain ends inside them.
        pub fn check_len(&self) -> Result<(), Error> {
            let buf = self.buf();
            if buf.len() < HEADER_LEN {
                return Err(Error::Truncated);
            }
            if byte(buf, 0) & VERSION_PT_MASK != VERSION_1_GTP {
                return Err(Error::BadVersion(byte(buf, 0) >> 5));
            }
            if buf.len() < self.end() {
                return Err(Error::Truncated);
            }
            self.walk().map(|_| ())
        }

        fn buf(&self) -> &[u8] {
            self.buffer.as_ref()
        }

        pub fn message_type(&self) -> u8 {
            byte(self.buf(), 1)
        }

        /// Bytes after the mandatory header (optional fields, extension headers, PDU).
        pub fn length(&self) -> u16 {
            be16(self.buf(), 2)
        }

        fn end(&self) -> usize {
            HEADER_LEN + usize::from(self.length())
        }

        /// Offset of the T-PDU: after the optional fields and extension headers.
        fn walk(&self) -> Result<usize, Error> {
            let area = self.buf().get(..self.end()).ok_or(Error::Truncated)?;
            if byte(area, 0) & OPTIONAL_FLAGS == 0 {
                return Ok(HEADER_LEN);
            }
            let mut off = HEADER_LEN + OPTIONAL_LEN;
            if area.len() < off {
                return Err(Error::Truncated);
            }
            // The next extension header type is the last byte of the optional fields,
            // then of each extension header; its length byte counts 4-byte units.
            let mut next = byte(area, off - 1);
            for _ in 0..MAX_EXTENSION_HEADERS {
                if next == 0 {
                    return Ok(off);
                }
                let units = usize::from(*area.get(off).ok_or(Error::Truncated)?);
                if units == 0 {
                    return Err(Error::BadHeaderLen);
                }
                off += units * EXTENSION_UNIT;
                next = *area.get(off - 1).ok_or(Error::Truncated)?;
            }
            Err(Error::TooManyExtensionHeaders)
        }
    }

    impl<'a> Packet<&'a [u8]> {
        /// The T-PDU of a G-PDU (a user packet), `None` for signalling messages (echo,
        /// error indication, end marker) or a bad header.
        pub fn g_pdu(&self) -> Option<&'a [u8]> {
            if self.message_type() != G_PDU {
                return None;
            }
            let start = self.walk().ok()?;
            self.buffer.get(start..self.end())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{ipv4::tests::build as ipv4_build, ipv6::tests::build as ipv6_build};

    const A4: [u8; 4] = [192, 0, 2, 1];
    const B4: [u8; 4] = [198, 51, 100, 1];

    fn a6(s: &str) -> core::net::Ipv6Addr {
        s.parse().unwrap()
    }

    /// An inner UDP packet to 5060.
    pub(crate) fn inner4() -> Vec<u8> {
        ipv4_build(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            IPPROTO_UDP,
            &crate::wire::udp::tests::build(5060, 5060, b"OPTIONS"),
        )
    }

    fn inner6() -> Vec<u8> {
        ipv6_build(
            a6("fd00::1"),
            a6("fd00::2"),
            IPPROTO_UDP,
            &[],
            &crate::wire::udp::tests::build(5060, 5060, b"OPTIONS"),
        )
    }

    fn outer4(proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_build(A4, B4, proto, payload)
    }

    fn outer6(nh: u8, payload: &[u8]) -> Vec<u8> {
        ipv6_build(a6("2001:db8::1"), a6("2001:db8::2"), nh, &[], payload)
    }

    fn open(p: &[u8]) -> Option<(Kind, &[u8])> {
        decapsulate(p).map(|i| (i.kind, i.packet))
    }

    #[test]
    fn ip_in_ip_all_four() {
        let (i4, i6) = (inner4(), inner6());
        for (outer, inner) in [
            (outer4(protocol::IPV4, &i4), &i4),
            (outer4(protocol::IPV6, &i6), &i6),
            (outer6(protocol::IPV4, &i4), &i4),
            (outer6(protocol::IPV6, &i6), &i6),
        ] {
            assert_eq!(open(&outer), Some((Kind::IpInIp, &inner[..])));
        }
        // 6in6 behind a destination options header.
        let dest_opts = [protocol::IPV6, 0, 1, 4, 0, 0, 0, 0];
        let p = ipv6_build(a6("2001:db8::1"), a6("2001:db8::2"), 60, &dest_opts, &i6);
        assert_eq!(open(&p), Some((Kind::IpInIp, &i6[..])));
        // The version must be the one the protocol names.
        assert_eq!(open(&outer4(protocol::IPV4, &i6)), None);
        assert_eq!(open(&outer6(protocol::IPV6, &i4)), None);
        // Link padding after the outer packet is not the inner packet's.
        let mut padded = outer4(protocol::IPV4, &i4);
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(open(&padded), Some((Kind::IpInIp, &i4[..])));
        // A fragment is not opened (reassembly comes first).
        let mut frag = outer4(protocol::IPV4, &i4);
        frag[6] = 0x20;
        assert_eq!(open(&frag), None);
        // Plain traffic is not a tunnel.
        assert_eq!(open(&i4), None);
        assert_eq!(open(&[]), None);
    }

    fn gre(flags: u16, proto: u16, fields: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut v = flags.to_be_bytes().to_vec();
        v.extend_from_slice(&proto.to_be_bytes());
        v.extend_from_slice(fields);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn gre_version_0() {
        let (i4, i6) = (inner4(), inner6());
        // Plain, then with checksum, key and sequence number (RFC 2890).
        for (flags, fields) in [(0x0000, 0), (0x8000, 4), (0x2000, 4), (0xb000, 12)] {
            let g = gre(flags, ethertype::IPV4, &vec![0xaa; fields], &i4);
            assert_eq!(open(&outer4(protocol::GRE, &g)), Some((Kind::Gre, &i4[..])));
            let g = gre(flags, ethertype::IPV6, &vec![0xaa; fields], &i6);
            assert_eq!(open(&outer6(protocol::GRE, &g)), Some((Kind::Gre, &i6[..])));
        }
        // gretap: an Ethernet frame (with a VLAN tag) inside.
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        eth.extend_from_slice(&i4);
        let g = gre(0x2000, ethertype::TEB, &[0, 0, 0, 9], &eth);
        assert_eq!(open(&outer4(protocol::GRE, &g)), Some((Kind::Gre, &i4[..])));
        // Routing present (RFC 1701), an unknown version, another protocol type, a
        // header longer than the packet: left as they are.
        for g in [
            gre(0x4000, ethertype::IPV4, &[0; 4], &i4),
            gre(0x0002, ethertype::IPV4, &[], &i4),
            gre(0x0000, 0x88be, &[], &i4),
            gre(0xb000, ethertype::IPV4, &[0; 6], &[]),
            gre(0x0000, ethertype::IPV6, &[], &i4),
        ] {
            assert_eq!(open(&outer4(protocol::GRE, &g)), None, "{g:02x?}");
        }
        assert_eq!(open(&outer4(protocol::GRE, &[0x00, 0x00, 0x08])), None);
    }

    #[test]
    fn gre_version_1_ppp() {
        let i4 = inner4();
        let i6 = inner6();
        let key = |len: usize| {
            let mut k = (len as u16).to_be_bytes().to_vec();
            k.extend_from_slice(&[0x12, 0x34]);
            k
        };
        let mut cases = Vec::new();
        // Address/control and a two-byte protocol; compressed both; with sequence and
        // acknowledgment numbers.
        for (ppp, inner) in [
            (vec![0xff, 0x03, 0x00, 0x21], &i4),
            (vec![0x21], &i4),
            (vec![0xff, 0x03, 0x57], &i6),
            (vec![0x00, 0x57], &i6),
        ] {
            let mut payload = ppp.clone();
            payload.extend_from_slice(inner);
            for (flags, extra) in [(0x2001, 0), (0x3001, 4), (0x3081, 8)] {
                let mut fields = key(payload.len());
                fields.extend(vec![0; extra]);
                let mut g = gre(flags, ethertype::PPP, &fields, &payload);
                // Bytes after the PPP payload length are not the packet's.
                g.extend_from_slice(&[0xee; 3]);
                cases.push((g, inner.clone()));
            }
        }
        for (g, inner) in &cases {
            assert_eq!(
                open(&outer4(protocol::GRE, g)),
                Some((Kind::Gre, &inner[..]))
            );
        }
        // PPP control protocols (LCP 0xc021) carry no IP; a payload length past the
        // packet; no key; another protocol type.
        let mut lcp = vec![0xff, 0x03, 0xc0, 0x21];
        lcp.extend_from_slice(&i4);
        for g in [
            gre(0x2001, ethertype::PPP, &key(lcp.len()), &lcp),
            gre(0x2001, ethertype::PPP, &key(i4.len() + 20), &i4),
            gre(0x0001, ethertype::PPP, &[], &i4),
            gre(0x2001, ethertype::IPV4, &key(i4.len()), &i4),
        ] {
            assert_eq!(open(&outer4(protocol::GRE, &g)), None, "{g:02x?}");
        }
    }

    fn gtp(flags: u8, msg: u8, optional: &[u8], pdu: &[u8]) -> Vec<u8> {
        let mut v = vec![flags, msg];
        v.extend_from_slice(&((optional.len() + pdu.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 7]);
        v.extend_from_slice(optional);
        v.extend_from_slice(pdu);
        v
    }

    fn udp4(dport: u16, payload: &[u8]) -> Vec<u8> {
        outer4(
            IPPROTO_UDP,
            &crate::wire::udp::tests::build(GTP_U_PORT, dport, payload),
        )
    }

    #[test]
    fn gtp_u() {
        let (i4, i6) = (inner4(), inner6());
        // No optional fields; a sequence number; PDU session container extension
        // (type 0x85, one unit) then a two-unit one.
        let ext = [0, 1, 0, 0x85, 1, 0x10, 0x09, 0x40, 2, 1, 2, 3, 4, 5, 6, 0];
        for (flags, optional) in [(0x30, &[][..]), (0x32, &[0, 1, 0, 0][..]), (0x34, &ext)] {
            for inner in [&i4, &i6] {
                let g = gtp(flags, gtpu::G_PDU, optional, inner);
                assert_eq!(open(&udp4(GTP_U_PORT, &g)), Some((Kind::GtpU, &inner[..])));
                let o6 = outer6(
                    IPPROTO_UDP,
                    &crate::wire::udp::tests::build(40000, GTP_U_PORT, &g),
                );
                assert_eq!(open(&o6), Some((Kind::GtpU, &inner[..])));
            }
        }
        // Not a G-PDU (echo request); GTP' (PT 0); version 2; another port; a length
        // past the datagram; an extension header of length 0 or running past the end;
        // an endless chain; a PDU that is not IP.
        let mut long = gtp(0x30, gtpu::G_PDU, &[], &i4);
        long[3] += 1;
        let mut chain = vec![0, 1, 0, 0x85];
        for _ in 0..gtpu::MAX_EXTENSION_HEADERS + 1 {
            chain.extend_from_slice(&[1, 0, 0, 0x85]);
        }
        for (port, g) in [
            (GTP_U_PORT, gtp(0x30, 1, &[], &i4)),
            (GTP_U_PORT, gtp(0x20, gtpu::G_PDU, &[], &i4)),
            (GTP_U_PORT, gtp(0x50, gtpu::G_PDU, &[], &i4)),
            (5060, gtp(0x30, gtpu::G_PDU, &[], &i4)),
            (GTP_U_PORT, long),
            (
                GTP_U_PORT,
                gtp(0x34, gtpu::G_PDU, &[0, 1, 0, 0x85, 0, 0, 0, 0], &i4),
            ),
            (
                GTP_U_PORT,
                gtp(0x34, gtpu::G_PDU, &[0, 1, 0, 0x85, 9, 0, 0, 0], &[]),
            ),
            (GTP_U_PORT, gtp(0x34, gtpu::G_PDU, &chain, &i4)),
            (GTP_U_PORT, gtp(0x30, gtpu::G_PDU, &[], b"\x00hello")),
        ] {
            assert_eq!(open(&udp4(port, &g)), None, "{g:02x?}");
        }
    }

    #[test]
    fn every_prefix_and_bit_flip_is_safe() {
        let i4 = inner4();
        let mut samples = vec![
            outer4(protocol::IPV4, &i4),
            outer4(protocol::GRE, &gre(0xb000, ethertype::IPV4, &[0; 12], &i4)),
            udp4(
                GTP_U_PORT,
                &gtp(0x34, gtpu::G_PDU, &[0, 1, 0, 0x85, 1, 0, 0, 0], &i4),
            ),
        ];
        let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
        ppp.extend_from_slice(&i4);
        let mut key = (ppp.len() as u16).to_be_bytes().to_vec();
        key.extend_from_slice(&[0, 1, 0, 0, 0, 1]);
        samples.push(outer4(
            protocol::GRE,
            &gre(0x3001, ethertype::PPP, &key, &ppp),
        ));
        for s in &samples {
            assert!(decapsulate(s).is_some());
            for cut in 0..s.len() {
                let _ = decapsulate(&s[..cut]);
            }
            for i in 0..s.len() {
                for bit in 0..8 {
                    let mut f = s.clone();
                    f[i] ^= 1 << bit;
                    if let Some(inner) = decapsulate(&f) {
                        // Always a slice of the outer packet.
                        let range = f.as_ptr_range();
                        assert!(range.contains(&inner.packet.as_ptr()) || inner.packet.is_empty());
                    }
                }
            }
        }
    }
}
