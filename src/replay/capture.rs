//! Capture files: classic pcap (both byte orders, µs and ns timestamps) and pcapng
//! (SHB/IDB/EPB/SPB/OPB, both byte orders, per-interface timestamp resolution), and
//! link-layer stripping for Ethernet (802.1Q/802.1ad tags), raw IP, Linux cooked v1/v2
//! and BSD loopback.
//!
//! The reader borrows from the file's bytes (no copy per record) and checks every length
//! against what is left of the file before using it: a capture is untrusted input (the
//! point of `replay` is to look at captures other people took), so a bad one yields an
//! [`Error`] naming the record and its byte offset, never a panic.

use core::fmt;

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_DLT_RAW: u32 = 12;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// One packet record of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// 1-based position among the packet records, as Wireshark numbers frames.
    pub number: usize,
    /// Byte offset of the record (its header) in the file.
    pub offset: usize,
    pub linktype: u32,
    /// Nanoseconds since the Unix epoch (0 when the format carries no timestamp).
    pub ts_ns: u64,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
}

/// Why a capture could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// 1-based number of the record being read (the packet that would have had this
    /// number for pcap; the block's position for pcapng); 0 for the file header.
    pub record: usize,
    /// Byte offset of that record or block in the file.
    pub offset: usize,
    pub what: ErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Fewer than 4 bytes, or a magic number that is neither pcap nor pcapng.
    UnknownFormat,
    /// The file ends inside a header.
    TruncatedHeader,
    /// A record's captured length runs past the end of the file.
    TruncatedData { needed: u64, available: usize },
    /// A pcapng block length that is too small, not a multiple of 4, or disagrees with
    /// the copy at the block's end.
    BadBlockLength(u32),
    /// A pcapng byte-order magic that is neither 0x1a2b3c4d nor its swap.
    BadByteOrderMagic,
    /// A pcapng packet block before any section header.
    NoSection,
    /// A pcapng packet for an interface that was not described.
    UnknownInterface(u32),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::UnknownFormat => f.write_str("not a pcap or pcapng file"),
            ErrorKind::TruncatedHeader => f.write_str("file ends inside the header"),
            ErrorKind::TruncatedData { needed, available } => write!(
                f,
                "captured length {needed} runs past the end of the file ({available} bytes left)"
            ),
            ErrorKind::BadBlockLength(n) => write!(f, "bad pcapng block length {n}"),
            ErrorKind::BadByteOrderMagic => f.write_str("bad pcapng byte-order magic"),
            ErrorKind::NoSection => f.write_str("pcapng block before the section header"),
            ErrorKind::UnknownInterface(i) => {
                write!(f, "packet for undescribed pcapng interface {i}")
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.record == 0 {
            write!(f, "file header at byte {}: {}", self.offset, self.what)
        } else {
            write!(
                f,
                "record {} at byte {}: {}",
                self.record, self.offset, self.what
            )
        }
    }
}

impl core::error::Error for Error {}

#[derive(Clone, Copy, Debug)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u16(self, b: &[u8], off: usize) -> Option<u16> {
        let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }
    fn u32(self, b: &[u8], off: usize) -> Option<u32> {
        let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }
}

/// Most pcapng interfaces per section we keep track of. Real captures have a handful;
/// the bound keeps a hostile file from growing memory with IDBs.
const MAX_INTERFACES: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second (if_tsresol); 10^6 by default.
    units_per_sec: u64,
}

#[derive(Debug)]
enum Format {
    Pcap {
        endian: Endian,
        linktype: u32,
        /// Nanoseconds per unit of the sub-second field: 1000 (µs) or 1 (ns).
        frac_ns: u64,
    },
    Pcapng {
        endian: Option<Endian>,
        interfaces: Vec<Interface>,
    },
}

/// An iterator over the packet records of a capture held in memory. After the first
/// error it yields nothing more.
#[derive(Debug)]
pub struct Capture<'a> {
    bytes: &'a [u8],
    off: usize,
    format: Format,
    /// Packet records returned so far.
    packets: usize,
    /// pcapng blocks seen so far (for error messages about non-packet blocks).
    blocks: usize,
    failed: bool,
}

impl<'a> Capture<'a> {
    /// Recognise the format from the file header.
    pub fn new(bytes: &'a [u8]) -> Result<Capture<'a>, Error> {
        let header_err = |what| Error {
            record: 0,
            offset: 0,
            what,
        };
        let magic = bytes.get(..4).ok_or(header_err(ErrorKind::UnknownFormat))?;
        let classic = |big: bool, frac_ns: u64| -> Result<Format, Error> {
            let endian = Endian { big };
            // The top bits of the link-type field carry FCS information (pcap-linktype).
            let linktype = endian
                .u32(bytes, 20)
                .ok_or(header_err(ErrorKind::TruncatedHeader))?
                & 0x0fff_ffff;
            Ok(Format::Pcap {
                endian,
                linktype,
                frac_ns,
            })
        };
        let (format, off) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (classic(false, 1000)?, 24),
            [0xa1, 0xb2, 0xc3, 0xd4] => (classic(true, 1000)?, 24),
            [0x4d, 0x3c, 0xb2, 0xa1] => (classic(false, 1)?, 24),
            [0xa1, 0xb2, 0x3c, 0x4d] => (classic(true, 1)?, 24),
            [0x0a, 0x0d, 0x0d, 0x0a] => (
                Format::Pcapng {
                    endian: None,
                    interfaces: Vec::new(),
                },
                0,
            ),
            _ => return Err(header_err(ErrorKind::UnknownFormat)),
        };
        Ok(Capture {
            bytes,
            off,
            format,
            packets: 0,
            blocks: 0,
            failed: false,
        })
    }

    fn next_pcap(
        &mut self,
        endian: Endian,
        linktype: u32,
        frac_ns: u64,
    ) -> Option<Result<Record<'a>, Error>> {
        let off = self.off;
        let rest = self.bytes.get(off..).unwrap_or(&[]);
        if rest.is_empty() {
            return None;
        }
        let number = self.packets + 1;
        let err = |what| Error {
            record: number,
            offset: off,
            what,
        };
        let (Some(sec), Some(frac), Some(incl)) = (
            endian.u32(rest, 0),
            endian.u32(rest, 4),
            endian.u32(rest, 8),
        ) else {
            return Some(Err(err(ErrorKind::TruncatedHeader)));
        };
        if rest.len() < 16 {
            return Some(Err(err(ErrorKind::TruncatedHeader)));
        }
        let available = rest.len() - 16;
        let Some(data) = usize::try_from(incl)
            .ok()
            .and_then(|n| rest.get(16..16usize.checked_add(n)?))
        else {
            return Some(Err(err(ErrorKind::TruncatedData {
                needed: u64::from(incl),
                available,
            })));
        };
        self.off = off.saturating_add(16).saturating_add(data.len());
        self.packets = number;
        // u32 seconds * 10^9 + a sub-second field below 2^32 * 1000 fits in u64.
        let ts_ns = u64::from(sec)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(frac).saturating_mul(frac_ns));
        Some(Ok(Record {
            number,
            offset: off,
            linktype,
            ts_ns,
            data,
        }))
    }

    fn next_pcapng(&mut self) -> Option<Result<Record<'a>, Error>> {
        loop {
            let off = self.off;
            let rest = self.bytes.get(off..).unwrap_or(&[]);
            if rest.is_empty() {
                return None;
            }
            self.blocks += 1;
            // Errors name the packet record that was being looked for, which is what a
            // user counts in Wireshark; the offset pins down the block.
            let number = self.packets + 1;
            let err = |what| Error {
                record: number,
                offset: off,
                what,
            };
            let Format::Pcapng { endian, interfaces } = &mut self.format else {
                return None;
            };
            let raw_type = rest.get(..4);
            if raw_type == Some(&[0x0a, 0x0d, 0x0d, 0x0a][..]) {
                // Section header: its byte-order magic decides the section's endianness,
                // and interface numbering starts over.
                *endian = Some(match rest.get(8..12) {
                    Some([0x1a, 0x2b, 0x3c, 0x4d]) => Endian { big: true },
                    Some([0x4d, 0x3c, 0x2b, 0x1a]) => Endian { big: false },
                    Some(_) => return Some(Err(err(ErrorKind::BadByteOrderMagic))),
                    None => return Some(Err(err(ErrorKind::TruncatedHeader))),
                });
                interfaces.clear();
            }
            let Some(e) = *endian else {
                return Some(Err(err(ErrorKind::NoSection)));
            };
            let (Some(btype), Some(blen)) = (e.u32(rest, 0), e.u32(rest, 4)) else {
                return Some(Err(err(ErrorKind::TruncatedHeader)));
            };
            let Some(block) = usize::try_from(blen).ok().and_then(|n| rest.get(..n)) else {
                return Some(Err(err(ErrorKind::TruncatedData {
                    needed: u64::from(blen),
                    available: rest.len(),
                })));
            };
            if blen < 12 || !blen.is_multiple_of(4) || e.u32(block, block.len() - 4) != Some(blen) {
                return Some(Err(err(ErrorKind::BadBlockLength(blen))));
            }
            let body = block.get(8..block.len() - 4).unwrap_or(&[]);
            self.off = off.saturating_add(block.len());
            let short = || Some(Err(err(ErrorKind::TruncatedHeader)));
            match btype {
                // Interface description.
                1 => {
                    let Some(linktype) = e.u16(body, 0) else {
                        return short();
                    };
                    if interfaces.len() < MAX_INTERFACES {
                        interfaces.push(Interface {
                            linktype: u32::from(linktype),
                            units_per_sec: if_tsresol(e, body.get(8..).unwrap_or(&[])),
                        });
                    }
                }
                // Enhanced packet (6) and the obsolete packet block (2): same layout up
                // to the packet data, except that the interface id is 16 bits in the old.
                2 | 6 => {
                    let ifid = if btype == 6 {
                        e.u32(body, 0)
                    } else {
                        e.u16(body, 0).map(u32::from)
                    };
                    let (Some(ifid), Some(hi), Some(lo), Some(cap)) =
                        (ifid, e.u32(body, 4), e.u32(body, 8), e.u32(body, 12))
                    else {
                        return short();
                    };
                    let Some(iface) = usize::try_from(ifid)
                        .ok()
                        .and_then(|i| interfaces.get(i))
                        .copied()
                    else {
                        return Some(Err(err(ErrorKind::UnknownInterface(ifid))));
                    };
                    let available = body.len().saturating_sub(20);
                    let Some(data) = usize::try_from(cap)
                        .ok()
                        .and_then(|n| body.get(20..20usize.checked_add(n)?))
                    else {
                        return Some(Err(err(ErrorKind::TruncatedData {
                            needed: u64::from(cap),
                            available,
                        })));
                    };
                    let units = (u64::from(hi) << 32) | u64::from(lo);
                    self.packets = number;
                    return Some(Ok(Record {
                        number,
                        offset: off,
                        linktype: iface.linktype,
                        ts_ns: to_ns(units, iface.units_per_sec),
                        data,
                    }));
                }
                // Simple packet: interface 0, no timestamp; the data is the original
                // length bounded by the block (the rest was cut by the snap length).
                3 => {
                    let Some(orig) = e.u32(body, 0) else {
                        return short();
                    };
                    let Some(iface) = interfaces.first().copied() else {
                        return Some(Err(err(ErrorKind::UnknownInterface(0))));
                    };
                    let avail = body.len().saturating_sub(4);
                    let len = usize::try_from(orig).unwrap_or(usize::MAX).min(avail);
                    let data = body.get(4..4 + len).unwrap_or(&[]);
                    self.packets = number;
                    return Some(Ok(Record {
                        number,
                        offset: off,
                        linktype: iface.linktype,
                        ts_ns: 0,
                        data,
                    }));
                }
                // Section header (handled above), name resolution, statistics, custom
                // and unknown blocks carry no packets.
                _ => {}
            }
        }
    }
}

impl<'a> Iterator for Capture<'a> {
    type Item = Result<Record<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = match self.format {
            Format::Pcap {
                endian,
                linktype,
                frac_ns,
            } => self.next_pcap(endian, linktype, frac_ns),
            Format::Pcapng { .. } => self.next_pcapng(),
        };
        if matches!(item, Some(Err(_))) {
            // Lengths after a bad one cannot be trusted: stop rather than resync on noise.
            self.failed = true;
        }
        item
    }
}

/// Timestamp units per second from an IDB's options (if_tsresol, code 9): bit 7 clear
/// means a power of 10, set a power of 2. Default 10^6.
fn if_tsresol(e: Endian, mut opts: &[u8]) -> u64 {
    const DEFAULT: u64 = 1_000_000;
    while let (Some(code), Some(len)) = (e.u16(opts, 0), e.u16(opts, 2)) {
        if code == 0 {
            break;
        }
        let len = usize::from(len);
        if code == 9 && len == 1 {
            let Some(&v) = opts.get(4) else {
                return DEFAULT;
            };
            let exp = u32::from(v & 0x7f);
            let base: u64 = if v & 0x80 == 0 { 10 } else { 2 };
            // Resolutions finer than what a u64 can count are not real captures.
            return base.checked_pow(exp).unwrap_or(DEFAULT).max(1);
        }
        // Options are padded to 32 bits.
        let padded = len.saturating_add(3) & !3;
        opts = opts.get(4usize.saturating_add(padded)..).unwrap_or(&[]);
    }
    DEFAULT
}

fn to_ns(units: u64, units_per_sec: u64) -> u64 {
    let per = units_per_sec.max(1);
    let ns = u128::from(units / per) * 1_000_000_000
        + u128::from(units % per) * 1_000_000_000 / u128::from(per);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Strip the link layer; `None` when the frame does not carry IPv4 or IPv6.
pub fn l3(linktype: u32, data: &[u8]) -> Option<&[u8]> {
    let ip_ethertype = |t: u16| t == 0x0800 || t == 0x86dd;
    let be16 = |off: usize| -> Option<u16> {
        Some(u16::from_be_bytes(
            data.get(off..off.checked_add(2)?)?.try_into().ok()?,
        ))
    };
    match linktype {
        LINKTYPE_ETHERNET => {
            let mut off = 12;
            let mut ethertype = be16(off)?;
            // Up to two VLAN tags (QinQ).
            for _ in 0..2 {
                if ethertype == 0x8100 || ethertype == 0x88a8 {
                    off += 4;
                    ethertype = be16(off)?;
                }
            }
            ip_ethertype(ethertype)
                .then(|| data.get(off + 2..))
                .flatten()
        }
        LINKTYPE_RAW | LINKTYPE_DLT_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => Some(data),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            // The family is in the capturing host's byte order (NULL) or big-endian
            // (LOOP); accept either. 2 = AF_INET, 24/28/30 = AF_INET6 on the BSDs/macOS.
            let fam: [u8; 4] = data.get(..4)?.try_into().ok()?;
            let v = u32::from_le_bytes(fam);
            let v = if v > 0xffff { v.swap_bytes() } else { v };
            matches!(v, 2 | 10 | 24 | 28 | 30)
                .then(|| data.get(4..))
                .flatten()
        }
        LINKTYPE_LINUX_SLL => ip_ethertype(be16(14)?).then(|| data.get(16..)).flatten(),
        LINKTYPE_LINUX_SLL2 => ip_ethertype(be16(0)?).then(|| data.get(20..)).flatten(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal IPv4/TCP packet carrying `payload`.
    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        let total = (40 + payload.len()) as u16;
        let mut v = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v.extend_from_slice(&40000u16.to_be_bytes());
        v.extend_from_slice(&21u16.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        v.extend_from_slice(payload);
        v
    }

    fn w32(big: bool, v: u32) -> [u8; 4] {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn w16(big: bool, v: u16) -> [u8; 2] {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// A classic pcap file with `n` copies of `frame`.
    pub(crate) fn classic(
        big: bool,
        nanos: bool,
        linktype: u32,
        frame: &[u8],
        n: usize,
    ) -> Vec<u8> {
        let mut f = w32(big, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }).to_vec();
        f.extend_from_slice(&w16(big, 2));
        f.extend_from_slice(&w16(big, 4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(big, 65535));
        f.extend_from_slice(&w32(big, linktype));
        for _ in 0..n {
            f.extend_from_slice(&w32(big, 1));
            f.extend_from_slice(&w32(big, 500));
            f.extend_from_slice(&w32(big, frame.len() as u32));
            f.extend_from_slice(&w32(big, frame.len() as u32));
            f.extend_from_slice(frame);
        }
        f
    }

    fn block(big: bool, t: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = (body.len() + 12) as u32;
        let mut b = w32(big, t).to_vec();
        b.extend_from_slice(&w32(big, len));
        b.extend_from_slice(&body);
        b.extend_from_slice(&w32(big, len));
        b
    }

    fn pcapng(big: bool, linktype: u32, frame: &[u8], tsresol: Option<u8>) -> Vec<u8> {
        let mut shb = w32(big, 0x1a2b_3c4d).to_vec();
        shb.extend_from_slice(&w16(big, 1));
        shb.extend_from_slice(&w16(big, 0));
        shb.extend_from_slice(&[0xff; 8]);
        let mut idb = w16(big, linktype as u16).to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&w32(big, 65535));
        if let Some(r) = tsresol {
            idb.extend_from_slice(&w16(big, 9));
            idb.extend_from_slice(&w16(big, 1));
            idb.extend_from_slice(&[r, 0, 0, 0]);
            idb.extend_from_slice(&[0; 4]);
        }
        let mut epb = w32(big, 0).to_vec();
        epb.extend_from_slice(&w32(big, 0));
        epb.extend_from_slice(&w32(big, 1_000_000));
        epb.extend_from_slice(&w32(big, frame.len() as u32));
        epb.extend_from_slice(&w32(big, frame.len() as u32));
        epb.extend_from_slice(frame);
        let mut spb = w32(big, frame.len() as u32).to_vec();
        spb.extend_from_slice(frame);
        let mut f = block(big, 0x0a0d_0d0a, &shb);
        f.extend(block(big, 1, &idb));
        f.extend(block(big, 5, &[0; 8])); // statistics block: skipped
        f.extend(block(big, 6, &epb));
        f.extend(block(big, 3, &spb));
        f
    }

    fn read(bytes: &[u8]) -> Result<Vec<Record<'_>>, Error> {
        Capture::new(bytes)?.collect()
    }

    /// Every supported container and link layer yields the same IP packet.
    #[test]
    fn formats_and_link_layers() {
        let ip = ipv4_tcp(b"PORT 10,0,0,1,4,1\r\n");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]); // 802.1Q, then IPv4
        eth.extend_from_slice(&ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        let mut null_be = 2u32.to_be_bytes().to_vec();
        null_be.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let links: [(u32, &[u8]); 8] = [
            (LINKTYPE_ETHERNET, &eth),
            (LINKTYPE_NULL, &null),
            (LINKTYPE_NULL, &null_be),
            (LINKTYPE_LOOP, &null_be),
            (LINKTYPE_RAW, &ip),
            (LINKTYPE_IPV4, &ip),
            (LINKTYPE_LINUX_SLL, &sll),
            (LINKTYPE_LINUX_SLL2, &sll2),
        ];
        for (linktype, frame) in links {
            let files = [
                classic(false, false, linktype, frame, 2),
                classic(true, false, linktype, frame, 2),
                classic(false, true, linktype, frame, 2),
                classic(true, true, linktype, frame, 2),
                pcapng(false, linktype, frame, None),
                pcapng(true, linktype, frame, None),
            ];
            for (i, file) in files.iter().enumerate() {
                let recs = read(file).unwrap_or_else(|e| panic!("link {linktype} file {i}: {e}"));
                assert_eq!(recs.len(), 2, "link {linktype} file {i}");
                for (n, r) in recs.iter().enumerate() {
                    assert_eq!(r.number, n + 1);
                    assert_eq!(r.linktype, linktype);
                    assert_eq!(l3(r.linktype, r.data), Some(&ip[..]), "link {linktype} {i}");
                }
                let want = match i {
                    0 | 1 => 1_000_500_000,
                    2 | 3 => 1_000_000_500,
                    _ => 1_000_000_000,
                };
                assert_eq!(recs[0].ts_ns, want, "file {i}");
            }
        }
        assert!(l3(LINKTYPE_ETHERNET, &[0; 13]).is_none());
        assert!(l3(147, &ip).is_none());
    }

    #[test]
    fn pcapng_timestamp_resolution() {
        let ip = ipv4_tcp(b"x");
        // 10^-9: the EPB's 1_000_000 units are 1 ms.
        let f = pcapng(false, LINKTYPE_RAW, &ip, Some(9));
        assert_eq!(read(&f).unwrap()[0].ts_ns, 1_000_000);
        // 2^-10.
        let f = pcapng(true, LINKTYPE_RAW, &ip, Some(0x80 | 10));
        assert_eq!(read(&f).unwrap()[0].ts_ns, 976_562_500_000);
        // Absurd resolutions fall back to µs instead of overflowing.
        let f = pcapng(false, LINKTYPE_RAW, &ip, Some(0x7f));
        assert_eq!(read(&f).unwrap()[0].ts_ns, 1_000_000_000);
    }

    #[test]
    fn truncated_and_corrupt_files_name_the_record() {
        let ip = ipv4_tcp(b"PORT 10,0,0,1,4,1\r\n");
        let good = classic(false, false, LINKTYPE_RAW, &ip, 3);
        let rec = 16 + ip.len();

        // Cut inside the third record's data.
        let cut = &good[..24 + 2 * rec + 20];
        let mut it = Capture::new(cut).unwrap();
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        let e = it.next().unwrap().unwrap_err();
        assert_eq!((e.record, e.offset), (3, 24 + 2 * rec));
        assert!(matches!(e.what, ErrorKind::TruncatedData { .. }));
        assert_eq!(
            e.to_string(),
            format!(
                "record 3 at byte {}: captured length {} runs past the end of the file (4 bytes left)",
                24 + 2 * rec,
                ip.len()
            )
        );
        assert!(it.next().is_none(), "no records after an error");

        // Cut inside the second record's header.
        let e = read(&good[..24 + rec + 7]).unwrap_err();
        assert_eq!(
            (e.record, e.offset, e.what),
            (2, 24 + rec, ErrorKind::TruncatedHeader)
        );

        // A huge captured length.
        let mut bad = good.clone();
        bad[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = read(&bad).unwrap_err();
        assert_eq!((e.record, e.offset), (1, 24));

        // Header problems.
        assert_eq!(read(b"nope").unwrap_err().what, ErrorKind::UnknownFormat);
        assert_eq!(read(b"").unwrap_err().what, ErrorKind::UnknownFormat);
        assert_eq!(
            read(&good[..10]).unwrap_err().what,
            ErrorKind::TruncatedHeader
        );
        assert_eq!(
            read(&good[..20]).unwrap_err().to_string(),
            "file header at byte 0: file ends inside the header"
        );
    }

    #[test]
    fn corrupt_pcapng_blocks() {
        let ip = ipv4_tcp(b"x");
        let good = pcapng(false, LINKTYPE_RAW, &ip, None);
        assert_eq!(read(&good).unwrap().len(), 2);
        // SHB 28 bytes, IDB 20, stats 20: the EPB starts at 68.
        let epb = 28 + 20 + 20;
        // Trailing length disagrees with the leading one.
        let mut bad = good.clone();
        bad[epb + 4] ^= 4;
        let e = read(&bad).unwrap_err();
        assert_eq!(e.record, 1);
        assert_eq!(e.offset, epb);
        // Captured length past the block.
        let mut bad = good.clone();
        bad[epb + 20..epb + 24].copy_from_slice(&1000u32.to_le_bytes());
        let e = read(&bad).unwrap_err();
        assert_eq!((e.record, e.offset), (1, epb));
        assert!(matches!(
            e.what,
            ErrorKind::TruncatedData { needed: 1000, .. }
        ));
        // Unknown interface.
        let mut bad = good.clone();
        bad[epb + 8] = 3;
        assert_eq!(read(&bad).unwrap_err().what, ErrorKind::UnknownInterface(3));
        // Truncated file: the SPB (record 2) is cut.
        let e = read(&good[..good.len() - 3]).unwrap_err();
        assert_eq!(e.record, 2);
        // Byte-order magic.
        let mut bad = good.clone();
        bad[8] = 0;
        assert_eq!(read(&bad).unwrap_err().what, ErrorKind::BadByteOrderMagic);
    }

    #[test]
    fn arbitrary_prefixes_and_bit_flips_never_panic() {
        let ip = ipv4_tcp(b"PORT 10,0,0,1,4,1\r\n");
        for file in [
            classic(false, false, LINKTYPE_ETHERNET, &ip, 2),
            pcapng(true, LINKTYPE_LINUX_SLL2, &ip, Some(9)),
        ] {
            for cut in 0..file.len() {
                let _ = read(&file[..cut]);
            }
            for i in 0..file.len() {
                for bit in [0x01, 0x80] {
                    let mut f = file.clone();
                    f[i] ^= bit;
                    if let Ok(recs) = read(&f) {
                        for r in recs {
                            let _ = l3(r.linktype, r.data);
                        }
                    }
                }
            }
        }
    }
}
