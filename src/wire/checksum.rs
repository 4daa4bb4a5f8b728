//! The internet checksum (RFC 1071) with the TCP/UDP pseudo-header, plus the RFC 1624
//! incremental update that NAT rewriting uses when it only changes a few fields.
//!
//! Partial sums are carried as `u32` "unfolded" one's-complement accumulators so callers
//! can add pieces (pseudo-header, header, payload) in any order; `fold` finishes.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Add `data` (as big-endian 16-bit words, odd tail padded with zero) to `acc`.
///
/// Pieces summed separately must start at even offsets of the checksummed area, except
/// the last one, or the byte pairing shifts.
pub fn accumulate(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        if let &[a, b] = pair {
            acc = add(acc, u32::from(u16::from_be_bytes([a, b])));
        }
    }
    if let &[last] = chunks.remainder() {
        acc = add(acc, u32::from(last) << 8);
    }
    acc
}

/// One's-complement addition on a 32-bit accumulator: carries out of bit 31 wrap around
/// so the accumulator never overflows however much is added.
#[inline]
pub fn add(acc: u32, value: u32) -> u32 {
    let (sum, carry) = acc.overflowing_add(value);
    sum.wrapping_add(u32::from(carry))
}

/// Fold an accumulator to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for data whose accumulated sum is `acc`.
#[inline]
pub fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// Checksum of a self-contained area (e.g. the IPv4 header with its checksum zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// True when `data`, including its checksum field, sums to all ones.
pub fn verify(data: &[u8]) -> bool {
    fold(accumulate(0, data)) == 0xffff
}

pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: u16) -> u32 {
    let mut acc = accumulate(0, &src.octets());
    acc = accumulate(acc, &dst.octets());
    acc = add(acc, u32::from(proto));
    add(acc, u32::from(l4_len))
}

pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4_len: u32) -> u32 {
    let mut acc = accumulate(0, &src.octets());
    acc = accumulate(acc, &dst.octets());
    acc = add(acc, l4_len >> 16);
    acc = add(acc, l4_len & 0xffff);
    add(acc, u32::from(proto))
}

/// Pseudo-header sum for either family. Mixed families have no pseudo-header; they
/// yield `None` rather than a meaningless sum.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> Option<u32> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            Some(pseudo_header_v4(s, d, proto, u16::try_from(l4_len).ok()?))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Some(pseudo_header_v6(s, d, proto, u32::try_from(l4_len).ok()?))
        }
        _ => None,
    }
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from `old` to `new`.
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!check);
    acc = add(acc, u32::from(!old));
    acc = add(acc, u32::from(new));
    !fold(acc)
}

/// RFC 1624 update for a same-length run of bytes that starts at an even offset of the
/// checksummed area (addresses, ports). An odd length is padded as `accumulate` does,
/// which is only right when the run ends the area or the padding byte is unchanged.
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let old_sum = fold(accumulate(0, old));
    let new_sum = fold(accumulate(0, new));
    update_u16(check, old_sum, new_sum)
}

/// RFC 1624 update when an address changes (NAT of the pseudo-header or IPv4 header).
pub fn update_addr(check: u16, old: IpAddr, new: IpAddr) -> u16 {
    match (old, new) {
        (IpAddr::V4(o), IpAddr::V4(n)) => update_bytes(check, &o.octets(), &n.octets()),
        (IpAddr::V6(o), IpAddr::V6(n)) => update_bytes(check, &o.octets(), &n.octets()),
        // A family change is not an incremental edit; the caller must recompute.
        _ => check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(accumulate(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn split_sum_equals_whole() {
        let data: [u8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let whole = fold(accumulate(0, &data));
        let split = fold(accumulate(accumulate(0, &data[..4]), &data[4..]));
        assert_eq!(whole, split);
    }

    #[test]
    fn large_accumulation_does_not_overflow() {
        let data = [0xffu8; 70000];
        let acc = accumulate(0, &data);
        assert_eq!(fold(acc), 0xffff);
    }

    #[test]
    fn incremental_matches_recompute() {
        let mut data = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0xc0, 0xa8, 0x01, 0x01,
        ];
        let c0 = checksum(&data);
        let old = [data[8], data[9], data[10], data[11]];
        let new = [10, 0, 0, 77];
        data[8..12].copy_from_slice(&new);
        assert_eq!(update_bytes(c0, &old, &new), checksum(&data));
        let c1 = checksum(&data);
        data[2..4].copy_from_slice(&0x0060u16.to_be_bytes());
        assert_eq!(update_u16(c1, 0x0054, 0x0060), checksum(&data));
    }

    #[test]
    fn mixed_family_pseudo_header_is_none() {
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let b = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(pseudo_header(a, b, 6, 20), None);
        assert_eq!(pseudo_header(a, a, 6, 70000), None);
    }
}
