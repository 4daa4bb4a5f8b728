//! UDP header view (RFC 768).

use core::net::IpAddr;

use crate::model::IPPROTO_UDP;

use super::{Error, be16, checksum, set_be16};

pub const HEADER_LEN: usize = 8;

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

    /// The length field must cover the header and fit the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let buf_len = self.buffer.as_ref().len();
        if buf_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if len > buf_len {
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
        be16(self.buf(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buf(), 2)
    }

    /// The UDP length field (header + payload).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(self.buf(), 4)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buf(), 6)
    }

    /// Payload bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        self.buf()
            .get(HEADER_LEN..usize::from(self.len()))
            .unwrap_or(&[])
    }

    /// A zero checksum means "none" over IPv4 and is accepted as such.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 && src.is_ipv4() {
            return true;
        }
        let Some(dgram) = self.buf().get(..usize::from(self.len())) else {
            return false;
        };
        match checksum::pseudo_header(src, dst, IPPROTO_UDP, dgram.len()) {
            Some(ph) => checksum::fold(checksum::accumulate(ph, dgram)) == 0xffff,
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), 0, port)
    }

    pub fn set_dst_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), 2, port)
    }

    pub fn set_len(&mut self, len: u16) {
        set_be16(self.buffer.as_mut(), 4, len)
    }

    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), 6, value)
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }

    /// Recompute the checksum over the pseudo-header and the datagram (as bounded by the
    /// length field). A computed 0 is sent as 0xffff, since 0 means "no checksum".
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) -> bool {
        let len = usize::from(self.len());
        let Some(ph) = checksum::pseudo_header(src, dst, IPPROTO_UDP, len) else {
            return false;
        };
        self.set_checksum(0);
        let Some(dgram) = self.buf().get(..len) else {
            return false;
        };
        let c = match checksum::finish(checksum::accumulate(ph, dgram)) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    pub fn build(sport: u16, dport: u16, payload: &[u8]) -> std::vec::Vec<u8> {
        let mut v = std::vec::Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&((HEADER_LEN + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parse_and_bounds() {
        let mut v = build(5000, 69, b"\x00\x01file\x00octet\x00");
        v.extend_from_slice(&[0xee; 4]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.src_port(), 5000);
        assert_eq!(p.dst_port(), 69);
        assert_eq!(p.payload(), b"\x00\x01file\x00octet\x00");
        let mut bad = v.clone();
        bad[5] = 7;
        bad[4] = 0;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            Error::BadHeaderLen
        );
        bad[5] = 200;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&v[..7]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn checksum_round_trip() {
        let s = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let d = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let mut v = build(1, 2, b"abc");
        let mut p = Packet::new_unchecked(&mut v[..]);
        assert!(p.verify_checksum(s, d), "zero checksum = none over IPv4");
        assert!(p.fill_checksum(s, d));
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum(s, d));
        let s6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let d6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(p.fill_checksum(s6, d6));
        assert!(p.verify_checksum(s6, d6));
        p.set_checksum(0);
        assert!(!p.verify_checksum(s6, d6), "IPv6 requires a checksum");
        // Length change (NAT rewrite) then refill.
        p.set_len(10);
        assert_eq!(p.payload_mut().len(), 2);
        assert!(p.fill_checksum(s, d));
        assert!(p.verify_checksum(s, d));
    }
}
