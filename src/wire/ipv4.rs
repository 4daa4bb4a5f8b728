//! IPv4 header view (RFC 791).

use core::net::Ipv4Addr;

use super::{Error, array, be16, byte, checksum, set_be16};

pub const MIN_HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// A view over a buffer that starts with an IPv4 header. The buffer may be longer than
/// the datagram (link padding); `total_len` bounds the payload.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without validation; accessors stay panic-free but may read zeros.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validate version, header length and total length against the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        if buf.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion(self.version()));
        }
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if buf.len() < hl {
            return Err(Error::Truncated);
        }
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(Error::BadLength);
        }
        if buf.len() < total {
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
        byte(self.buf(), field::VER_IHL) >> 4
    }

    pub fn header_len(&self) -> usize {
        usize::from(byte(self.buf(), field::VER_IHL) & 0x0f) * 4
    }

    pub fn total_len(&self) -> u16 {
        be16(self.buf(), field::TOTAL_LEN)
    }

    pub fn ident(&self) -> u16 {
        be16(self.buf(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        be16(self.buf(), field::FLAGS_FRAG) & 0x4000 != 0
    }

    pub fn more_frags(&self) -> bool {
        be16(self.buf(), field::FLAGS_FRAG) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf(), field::FLAGS_FRAG) & 0x1fff) << 3
    }

    pub fn ttl(&self) -> u8 {
        byte(self.buf(), field::TTL)
    }

    pub fn protocol(&self) -> u8 {
        byte(self.buf(), field::PROTOCOL)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buf(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buf(), field::SRC))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buf(), field::DST))
    }

    /// The header bytes (options included), or empty if the view is invalid.
    pub fn header(&self) -> &[u8] {
        self.buf().get(..self.header_len()).unwrap_or(&[])
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.header())
    }

    /// The datagram payload, bounded by the total length field.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len());
        let start = self.header_len().max(MIN_HEADER_LEN);
        self.buf().get(start..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn buf_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_total_len(&mut self, len: u16) {
        set_be16(self.buf_mut(), field::TOTAL_LEN, len)
    }

    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buf_mut(), field::CHECKSUM, value)
    }

    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        if let Some(s) = self.buf_mut().get_mut(field::SRC..field::SRC + 4) {
            s.copy_from_slice(&addr.octets());
        }
    }

    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        if let Some(s) = self.buf_mut().get_mut(field::DST..field::DST + 4) {
            s.copy_from_slice(&addr.octets());
        }
    }

    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Mutable payload (bounded by the total length field).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len().max(MIN_HEADER_LEN);
        let end = usize::from(self.total_len());
        self.buf_mut().get_mut(start..end).unwrap_or(&mut [])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 20-byte header + `payload`, valid checksum.
    pub fn build(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> std::vec::Vec<u8> {
        let total = 20 + payload.len();
        let mut v = std::vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
        v.extend_from_slice(&src);
        v.extend_from_slice(&dst);
        v.extend_from_slice(payload);
        let mut p = Packet::new_unchecked(&mut v[..]);
        p.set_total_len(total as u16);
        p.fill_checksum();
        v
    }

    #[test]
    fn parse_fields() {
        let v = build([10, 0, 0, 1], [10, 0, 0, 2], 6, b"abc");
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 23);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.payload(), b"abc");
        assert!(p.verify_checksum());
    }

    #[test]
    fn payload_bounded_by_total_len_not_buffer() {
        let mut v = build([1, 1, 1, 1], [2, 2, 2, 2], 17, b"xy");
        v.extend_from_slice(&[0; 6]); // Ethernet padding
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload(), b"xy");
    }

    #[test]
    fn rejects_bad_lengths() {
        let v = build([1, 1, 1, 1], [2, 2, 2, 2], 6, b"abcd");
        assert_eq!(Packet::new_checked(&v[..10]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&v[..22]).unwrap_err(), Error::Truncated);
        let mut bad = v.clone();
        bad[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            Error::BadHeaderLen
        );
        let mut bad = v.clone();
        bad[0] = 0x4f; // 60-byte header in a 24-byte buffer
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
        let mut bad = v.clone();
        bad[2] = 0;
        bad[3] = 10;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadLength);
        let mut bad = v;
        bad[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            Error::BadVersion(6)
        );
    }

    #[test]
    fn unchecked_short_buffer_does_not_panic() {
        let p = Packet::new_unchecked(&[0x4fu8][..]);
        assert_eq!(p.total_len(), 0);
        assert_eq!(p.payload(), b"");
        assert_eq!(p.src_addr(), Ipv4Addr::UNSPECIFIED);
        let mut buf = [0x45u8; 3];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum();
        p.set_dst_addr(Ipv4Addr::BROADCAST);
        assert_eq!(p.payload_mut().len(), 0);
    }

    #[test]
    fn emit_round_trip_total_len_and_checksum() {
        let mut v = build([192, 168, 1, 1], [192, 168, 1, 2], 6, b"hello");
        // NAT grows the payload by 3 bytes: set the new total length, refill the checksum.
        v.extend_from_slice(b"!!!");
        let mut p = Packet::new_unchecked(&mut v[..]);
        p.set_total_len(28);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        p.set_src_addr(Ipv4Addr::new(203, 0, 113, 9));
        p.fill_checksum();
        let p = Packet::new_checked(&v[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), b"hello!!!");
        assert_eq!(p.src_addr(), Ipv4Addr::new(203, 0, 113, 9));
    }
}
