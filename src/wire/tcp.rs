//! TCP header view (RFC 9293). The view covers exactly one segment (header + payload),
//! as cut out by the IP layer's length field.

use core::net::IpAddr;

use crate::model::IPPROTO_TCP;

use super::{Error, be16, be32, byte, checksum, set_be16, set_be32};

pub const MIN_HEADER_LEN: usize = 20;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
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

    /// The data offset must cover at least the fixed header and fit the segment.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if hl > len {
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

    pub fn src_port(&self) -> u16 {
        be16(self.buf(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buf(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        be32(self.buf(), field::SEQ)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.buf(), field::ACK)
    }

    pub fn header_len(&self) -> usize {
        usize::from(byte(self.buf(), field::DATA_OFF) >> 4) * 4
    }

    /// The classic flag byte (FIN..CWR); see [`flags`].
    pub fn flags(&self) -> u8 {
        byte(self.buf(), field::FLAGS)
    }

    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    pub fn window(&self) -> u16 {
        be16(self.buf(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buf(), field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        be16(self.buf(), field::URGENT)
    }

    pub fn payload(&self) -> &[u8] {
        // The max() keeps an unchecked view with a bogus data offset from returning
        // header bytes as payload.
        let hl = self.header_len().max(MIN_HEADER_LEN);
        self.buf().get(hl..).unwrap_or(&[])
    }

    /// Verify the checksum over the pseudo-header and the whole segment.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        match checksum::pseudo_header(src, dst, IPPROTO_TCP, self.buf().len()) {
            Some(ph) => checksum::fold(checksum::accumulate(ph, self.buf())) == 0xffff,
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn buf_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_src_port(&mut self, port: u16) {
        set_be16(self.buf_mut(), field::SRC_PORT, port)
    }

    pub fn set_dst_port(&mut self, port: u16) {
        set_be16(self.buf_mut(), field::DST_PORT, port)
    }

    pub fn set_seq_number(&mut self, seq: u32) {
        set_be32(self.buf_mut(), field::SEQ, seq)
    }

    pub fn set_ack_number(&mut self, ack: u32) {
        set_be32(self.buf_mut(), field::ACK, ack)
    }

    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buf_mut(), field::CHECKSUM, value)
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len().max(MIN_HEADER_LEN);
        self.buf_mut().get_mut(hl..).unwrap_or(&mut [])
    }

    /// Recompute the checksum over the pseudo-header and the whole segment. Returns false
    /// (leaving the field untouched) when the addresses have no pseudo-header.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) -> bool {
        let Some(ph) = checksum::pseudo_header(src, dst, IPPROTO_TCP, self.buf().len()) else {
            return false;
        };
        self.set_checksum(0);
        let c = checksum::finish(checksum::accumulate(ph, self.buf()));
        self.set_checksum(c);
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    pub fn build(sport: u16, dport: u16, seq: u32, fl: u8, payload: &[u8]) -> std::vec::Vec<u8> {
        let mut v = std::vec::Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.push(5 << 4);
        v.push(fl);
        v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parse_fields() {
        let v = build(
            40000,
            21,
            0xdeadbeef,
            flags::ACK | flags::PSH,
            b"PORT x\r\n",
        );
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 21);
        assert_eq!(p.seq_number(), 0xdeadbeef);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.flags(), flags::ACK | flags::PSH);
        assert!(!p.syn());
        assert_eq!(p.window(), 0xffff);
        assert_eq!(p.payload(), b"PORT x\r\n");
    }

    #[test]
    fn data_offset_validated() {
        let mut v = build(1, 2, 3, 0, b"");
        v[12] = 4 << 4;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            Error::BadHeaderLen
        );
        v[12] = 6 << 4; // 24 bytes claimed, 20 present
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&v[..19]).unwrap_err(), Error::Truncated);
        let p = Packet::new_unchecked(&v[..3]);
        assert_eq!(p.payload(), b"");
        assert_eq!(p.seq_number(), 0);
    }

    #[test]
    fn checksum_round_trip_v4_and_v6() {
        let s4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let d4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let s6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let d6 = IpAddr::V6("2001:db8::5".parse().unwrap());
        for (s, d) in [(s4, d4), (s6, d6)] {
            let mut v = build(1234, 21, 1, flags::ACK, b"odd length!");
            let mut p = Packet::new_unchecked(&mut v[..]);
            assert!(p.fill_checksum(s, d));
            assert!(p.verify_checksum(s, d));
            p.payload_mut()[0] = b'O';
            assert!(!p.verify_checksum(s, d));
            // Incremental fix of one even-aligned word matches a full recompute.
            let old = p.checksum();
            let inc =
                checksum::update_u16(old, u16::from_be_bytes(*b"od"), u16::from_be_bytes(*b"Od"));
            p.fill_checksum(s, d);
            assert_eq!(inc, p.checksum());
            assert!(!p.fill_checksum(s4, d6));
        }
    }
}
