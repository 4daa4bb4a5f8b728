//! Minimal capture reader for replay tests: classic pcap (both byte orders, µs and ns
//! timestamps) and pcapng (SHB/IDB/EPB/SPB, both byte orders), and link-layer stripping
//! for Ethernet (802.1Q/802.1ad tags), raw IP, Linux cooked v1/v2 and BSD loopback.

#[derive(Debug, Clone)]
pub struct Frame {
    /// 1-based position in the file, as Wireshark numbers frames.
    pub number: usize,
    pub linktype: u32,
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_DLT_RAW: u32 = 12;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

#[derive(Clone, Copy)]
struct Endian(bool); // true = big

impl Endian {
    fn u16(self, b: &[u8], off: usize) -> Option<u16> {
        let s: [u8; 2] = b.get(off..off + 2)?.try_into().ok()?;
        Some(if self.0 {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }
    fn u32(self, b: &[u8], off: usize) -> Option<u32> {
        let s: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
        Some(if self.0 {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }
}

pub fn read(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let magic = bytes.get(..4).ok_or("file too short")?;
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => classic(bytes, Endian(false), 1000),
        [0xa1, 0xb2, 0xc3, 0xd4] => classic(bytes, Endian(true), 1000),
        [0x4d, 0x3c, 0xb2, 0xa1] => classic(bytes, Endian(false), 1),
        [0xa1, 0xb2, 0x3c, 0x4d] => classic(bytes, Endian(true), 1),
        [0x0a, 0x0d, 0x0d, 0x0a] => pcapng(bytes),
        _ => Err(format!("unknown capture magic {magic:02x?}")),
    }
}

fn classic(bytes: &[u8], e: Endian, frac_ns: u64) -> Result<Vec<Frame>, String> {
    let linktype = e.u32(bytes, 20).ok_or("short pcap header")? & 0x0fff_ffff;
    let mut off = 24;
    let mut frames = Vec::new();
    while off + 16 <= bytes.len() {
        let sec = u64::from(e.u32(bytes, off).unwrap_or(0));
        let frac = u64::from(e.u32(bytes, off + 4).unwrap_or(0));
        let incl = e.u32(bytes, off + 8).unwrap_or(0) as usize;
        let data = bytes
            .get(off + 16..off + 16 + incl)
            .ok_or_else(|| format!("record at {off} runs past the end"))?;
        frames.push(Frame {
            number: frames.len() + 1,
            linktype,
            ts_ns: sec * 1_000_000_000 + frac * frac_ns,
            data: data.to_vec(),
        });
        off += 16 + incl;
    }
    Ok(frames)
}

fn pcapng(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let mut off = 0;
    let mut e = Endian(false);
    let mut ifaces: Vec<u32> = Vec::new();
    let mut frames = Vec::new();
    while off + 12 <= bytes.len() {
        let raw_type = bytes.get(off..off + 4).ok_or("short block")?;
        if raw_type == [0x0a, 0x0d, 0x0d, 0x0a] {
            // Section header: the byte-order magic decides the section's endianness.
            e = match bytes.get(off + 8..off + 12) {
                Some([0x1a, 0x2b, 0x3c, 0x4d]) => Endian(true),
                Some([0x4d, 0x3c, 0x2b, 0x1a]) => Endian(false),
                _ => return Err("bad pcapng byte-order magic".into()),
            };
            ifaces.clear();
        }
        let btype = e.u32(bytes, off).ok_or("short block")?;
        let blen = e.u32(bytes, off + 4).ok_or("short block")? as usize;
        if blen < 12 || !blen.is_multiple_of(4) || off + blen > bytes.len() {
            return Err(format!("bad block length {blen} at {off}"));
        }
        let body = &bytes[off + 8..off + blen - 4];
        match btype {
            1 => ifaces.push(u32::from(e.u16(body, 0).ok_or("short IDB")?)),
            6 => {
                let ifid = e.u32(body, 0).ok_or("short EPB")? as usize;
                let ts = (u64::from(e.u32(body, 4).unwrap_or(0)) << 32)
                    | u64::from(e.u32(body, 8).unwrap_or(0));
                let cap = e.u32(body, 12).ok_or("short EPB")? as usize;
                let data = body.get(20..20 + cap).ok_or("EPB data past block")?;
                frames.push(Frame {
                    number: frames.len() + 1,
                    linktype: *ifaces.get(ifid).ok_or("EPB for unknown interface")?,
                    // Default if_tsresol (µs); captures with other resolutions only
                    // get odd timestamps, which the tests do not use for decisions.
                    ts_ns: ts * 1000,
                    data: data.to_vec(),
                });
            }
            3 => {
                let orig = e.u32(body, 0).ok_or("short SPB")? as usize;
                let avail = body.len().saturating_sub(4);
                let data = body.get(4..4 + orig.min(avail)).ok_or("SPB data")?;
                frames.push(Frame {
                    number: frames.len() + 1,
                    linktype: *ifaces.first().ok_or("SPB without interface")?,
                    ts_ns: 0,
                    data: data.to_vec(),
                });
            }
            _ => {}
        }
        off += blen;
    }
    Ok(frames)
}

/// Strip the link layer; `None` when the frame does not carry IPv4/IPv6.
pub fn l3(linktype: u32, data: &[u8]) -> Option<&[u8]> {
    let ip_ethertype = |t: u16| t == 0x0800 || t == 0x86dd;
    match linktype {
        LINKTYPE_ETHERNET => {
            let mut off = 12;
            let mut ethertype = u16::from_be_bytes(data.get(off..off + 2)?.try_into().ok()?);
            // Up to two VLAN tags (QinQ).
            for _ in 0..2 {
                if ethertype == 0x8100 || ethertype == 0x88a8 {
                    off += 4;
                    ethertype = u16::from_be_bytes(data.get(off..off + 2)?.try_into().ok()?);
                }
            }
            ip_ethertype(ethertype)
                .then(|| data.get(off + 2..))
                .flatten()
        }
        LINKTYPE_RAW | LINKTYPE_DLT_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => Some(data),
        LINKTYPE_NULL => {
            // The family is in the capturing host's byte order; accept either.
            let fam = data.get(..4)?;
            let v = u32::from_le_bytes(fam.try_into().ok()?);
            let v = if v > 0xffff { v.swap_bytes() } else { v };
            matches!(v, 2 | 24 | 28 | 30)
                .then(|| data.get(4..))
                .flatten()
        }
        LINKTYPE_LINUX_SLL => {
            let proto = u16::from_be_bytes(data.get(14..16)?.try_into().ok()?);
            ip_ethertype(proto).then(|| data.get(16..)).flatten()
        }
        LINKTYPE_LINUX_SLL2 => {
            let proto = u16::from_be_bytes(data.get(0..2)?.try_into().ok()?);
            ip_ethertype(proto).then(|| data.get(20..)).flatten()
        }
        _ => None,
    }
}
