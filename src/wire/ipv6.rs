//! IPv6 header view (RFC 8200) with a bounded extension-header walk.

use core::net::Ipv6Addr;

use super::{Error, array, be16, byte, set_be16};

pub const HEADER_LEN: usize = 40;

/// Extension headers we step over to reach TCP/UDP.
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

/// Bound on the extension-header chain. Real packets carry one or two; the bound keeps a
/// crafted chain from costing more than a few lookups.
pub const MAX_EXTENSION_HEADERS: usize = 8;

mod field {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

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

    /// Validate the version and that the buffer holds the fixed header and the payload
    /// length. A zero payload length with a hop-by-hop jumbo option is not supported (the
    /// queue never hands us jumbograms): it simply means an empty payload here.
    pub fn check_len(&self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::BadVersion(self.version()));
        }
        if buf.len() < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        byte(self.buf(), 0) >> 4
    }

    pub fn payload_len(&self) -> u16 {
        be16(self.buf(), field::PAYLOAD_LEN)
    }

    pub fn next_header(&self) -> u8 {
        byte(self.buf(), field::NEXT_HEADER)
    }

    pub fn hop_limit(&self) -> u8 {
        byte(self.buf(), field::HOP_LIMIT)
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buf(), field::SRC))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buf(), field::DST))
    }

    /// Everything after the fixed header, bounded by the payload length field.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.buf().get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// Walk the extension headers and return (upper-layer protocol, its offset from the
    /// start of the IPv6 header). Fragments are refused unless the packet is an atomic
    /// fragment (offset 0, M clear), because only then does it hold the whole segment.
    pub fn upper_layer(&self) -> Result<(u8, usize), Error> {
        let end = HEADER_LEN + usize::from(self.payload_len());
        let area = self.buf().get(..end).ok_or(Error::Truncated)?;
        let mut nh = self.next_header();
        let mut off = HEADER_LEN;
        for _ in 0..MAX_EXTENSION_HEADERS {
            let len = match nh {
                next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DEST_OPTS => {
                    let hdr = area.get(off..off + 2).ok_or(Error::Truncated)?;
                    (usize::from(byte(hdr, 1)) + 1) * 8
                }
                next_header::FRAGMENT => {
                    let hdr = area.get(off..off + 8).ok_or(Error::Truncated)?;
                    let offlg = be16(hdr, 2);
                    if offlg & 0xfff8 != 0 || offlg & 1 != 0 {
                        return Err(Error::Fragment);
                    }
                    8
                }
                next_header::AH => {
                    let hdr = area.get(off..off + 2).ok_or(Error::Truncated)?;
                    (usize::from(byte(hdr, 1)) + 2) * 4
                }
                next_header::NO_NEXT => return Err(Error::UnsupportedProtocol(nh)),
                _ => return Ok((nh, off)),
            };
            nh = byte(area, off);
            off += len;
            if off > area.len() {
                return Err(Error::Truncated);
            }
        }
        Err(Error::TooManyExtensionHeaders)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        set_be16(self.buffer.as_mut(), field::PAYLOAD_LEN, len)
    }

    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::SRC..field::SRC + 16) {
            s.copy_from_slice(&addr.octets());
        }
    }

    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::DST..field::DST + 16) {
            s.copy_from_slice(&addr.octets());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Fixed header + `ext` (already chained, first type `first_nh`) + `payload`.
    pub fn build(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        first_nh: u8,
        ext: &[u8],
        payload: &[u8],
    ) -> std::vec::Vec<u8> {
        let plen = (ext.len() + payload.len()) as u16;
        let mut v = std::vec![0x60, 0, 0, 0];
        v.extend_from_slice(&plen.to_be_bytes());
        v.push(first_nh);
        v.push(64);
        v.extend_from_slice(&src.octets());
        v.extend_from_slice(&dst.octets());
        v.extend_from_slice(ext);
        v.extend_from_slice(payload);
        v
    }

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn plain_header() {
        let v = build(a("2001:db8::1"), a("2001:db8::2"), 6, &[], b"0123456789");
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload_len(), 10);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), a("2001:db8::1"));
        assert_eq!(p.dst_addr(), a("2001:db8::2"));
        assert_eq!(p.upper_layer(), Ok((6, 40)));
        assert_eq!(p.payload(), b"0123456789");
    }

    #[test]
    fn skips_extension_headers() {
        // hop-by-hop (8) -> dest opts (16) -> AH (len 4 => 24 bytes) -> atomic fragment -> UDP
        let mut ext = std::vec![next_header::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[next_header::AH, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut ah = std::vec![0u8; 24];
        ah[0] = next_header::FRAGMENT;
        ah[1] = 4;
        ext.extend_from_slice(&ah);
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 1]);
        let v = build(a("::1"), a("::2"), next_header::HOP_BY_HOP, &ext, &[0; 8]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Ok((17, 40 + 8 + 16 + 24 + 8)));
    }

    #[test]
    fn fragments_are_refused() {
        // Non-first fragment.
        let ext = [6, 0, 0x00, 0x08, 0, 0, 0, 1];
        let v = build(a("::1"), a("::2"), next_header::FRAGMENT, &ext, &[0; 20]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Fragment));
        // First fragment with more to come.
        let ext = [6, 0, 0x00, 0x01, 0, 0, 0, 1];
        let v = build(a("::1"), a("::2"), next_header::FRAGMENT, &ext, &[0; 20]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Fragment));
    }

    #[test]
    fn bounded_and_truncated_chains() {
        let mut ext = std::vec::Vec::new();
        for _ in 0..20 {
            ext.extend_from_slice(&[next_header::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        let v = build(a("::1"), a("::2"), next_header::DEST_OPTS, &ext, &[]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::TooManyExtensionHeaders));
        // Header claims 255*8 bytes that are not there.
        let v = build(
            a("::1"),
            a("::2"),
            next_header::ROUTING,
            &[6, 255, 0, 0],
            &[],
        );
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
        let v = build(a("::1"), a("::2"), next_header::NO_NEXT, &[], &[]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::UnsupportedProtocol(59)));
    }

    #[test]
    fn rejects_short_buffers() {
        let v = build(a("::1"), a("::2"), 6, &[], &[1, 2, 3]);
        assert_eq!(Packet::new_checked(&v[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&v[..42]).unwrap_err(), Error::Truncated);
        let p = Packet::new_unchecked(&v[..5]);
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
        assert_eq!(p.payload(), b"");
    }

    #[test]
    fn payload_len_round_trip() {
        let mut v = build(a("::1"), a("::2"), 17, &[], &[0; 8]);
        v.extend_from_slice(&[0; 4]);
        let mut p = Packet::new_unchecked(&mut v[..]);
        p.set_payload_len(12);
        p.set_src_addr(a("fe80::9"));
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(p.src_addr(), a("fe80::9"));
    }
}
