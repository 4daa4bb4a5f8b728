//! IP fragment reassembly for replay, as the kernel's defragmentation (nf_defrag_ipv4,
//! nf_defrag_ipv6) does before conntrack sees a packet: a fragmented datagram reaches
//! the helper whole, at the frame of the fragment that completed it.
//!
//! Fragments are matched by source, destination and identification (and protocol for
//! IPv4, RFC 791; RFC 8200 §4.5 for IPv6). The rules are the ones Linux applies: a
//! fragment that only repeats bytes already held is ignored; one that partly overlaps
//! them discards the whole datagram (RFC 5722, which Linux applies to IPv4 too); a
//! second last fragment with another end, data past the end, an empty fragment or a
//! datagram past 65,535 bytes discard it too; an IPv6 fragment other than the last must
//! be a multiple of 8 bytes long (else it alone is dropped), an IPv4 one is cut down to
//! one. Datagrams wait at most the kernel's reassembly timeout (capture time), and at
//! most [`MAX_PENDING_DATAGRAMS`] wait at once: the oldest is pushed out.
//!
//! A capture is untrusted input: every length is checked before use and memory is
//! bounded by [`MAX_PENDING_DATAGRAMS`] × [`MAX_DATAGRAM_LEN`].

use core::ops::Range;

use crate::wire::{be16, ipv4, ipv6, set_be16};

/// Datagrams being reassembled at once; a new one beyond this pushes out the oldest.
pub const MAX_PENDING_DATAGRAMS: usize = 64;

/// Largest datagram rebuilt: what an IP length field can say (IPv4's total length;
/// IPv6's payload length, the header after the fixed one included). No jumbograms.
pub const MAX_DATAGRAM_LEN: usize = 65_535;

const NS_PER_SEC: u64 = 1_000_000_000;

/// How long an IPv4 datagram's fragments wait for the rest (Linux: net.ipv4.ipfrag_time).
pub const IPV4_TIMEOUT_NS: u64 = 30 * NS_PER_SEC;

/// ... and an IPv6 one's (net.netfilter.nf_conntrack_frag6_timeout).
pub const IPV6_TIMEOUT_NS: u64 = 60 * NS_PER_SEC;

/// Fragment offsets count 8-byte units; every fragment but the last is a multiple.
const FRAGMENT_UNIT: usize = 8;

/// The IPv4 header's flags and fragment offset field, and its don't-fragment bit.
const FLAGS_FRAGMENT_OFFSET: usize = 6;
const DONT_FRAGMENT: u16 = 0x4000;

/// The IPv6 fragment header's length.
const FRAGMENT_HEADER_LEN: usize = 8;

/// Why a fragment never became part of a replayed datagram; counts of fragments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Its datagram still lacked fragments at the end of the capture.
    pub incomplete: usize,
    /// Its datagram waited longer than the reassembly timeout.
    pub timed_out: usize,
    /// Its datagram was pushed out by newer ones ([`MAX_PENDING_DATAGRAMS`]).
    pub evicted: usize,
    /// Its datagram had fragments that partly overlap.
    pub overlapping: usize,
    /// It only repeated bytes already held (ignored; the datagram went on).
    pub duplicate: usize,
    /// Its datagram grew past [`MAX_DATAGRAM_LEN`].
    pub oversized: usize,
    /// Inconsistent lengths: a second end, data past the end, an empty fragment, an
    /// IPv6 fragment other than the last not a multiple of 8 bytes.
    pub invalid: usize,
}

impl Dropped {
    pub fn total(&self) -> usize {
        self.incomplete
            + self.timed_out
            + self.evicted
            + self.overlapping
            + self.duplicate
            + self.oversized
            + self.invalid
    }

    /// (name, count) of every reason, for output.
    pub fn by_reason(&self) -> [(&'static str, usize); 7] {
        [
            ("incomplete", self.incomplete),
            ("timed_out", self.timed_out),
            ("evicted", self.evicted),
            ("overlapping", self.overlapping),
            ("duplicate", self.duplicate),
            ("oversized", self.oversized),
            ("invalid", self.invalid),
        ]
    }

    fn count(&mut self, reason: Reason, n: usize) {
        let slot = match reason {
            Reason::Incomplete => &mut self.incomplete,
            Reason::TimedOut => &mut self.timed_out,
            Reason::Evicted => &mut self.evicted,
            Reason::Overlapping => &mut self.overlapping,
            Reason::Duplicate => &mut self.duplicate,
            Reason::Oversized => &mut self.oversized,
            Reason::Invalid => &mut self.invalid,
        };
        *slot += n;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Incomplete,
    TimedOut,
    Evicted,
    Overlapping,
    Duplicate,
    Oversized,
    Invalid,
}

/// What became of a packet handed to [`Reassembler::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Not a fragment (or not a packet we can read as one): use it as it is.
    Whole,
    /// A fragment, held for its datagram or dropped (see [`Reassembler::dropped`]).
    Held,
    /// This fragment completed its datagram: the rebuilt IP packet.
    Complete(Vec<u8>),
}

/// What identifies a datagram's fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        ident: u16,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        ident: u32,
    },
}

/// One fragment, taken apart.
struct Fragment<'a> {
    key: Key,
    /// What goes in front of the rebuilt payload: the IPv4 header, or IPv6's fixed
    /// header and the extension headers before the fragment header.
    header: &'a [u8],
    /// IPv6: where in `header` the next-header byte naming the fragment header is, and
    /// the fragment header's next header (what that byte says once it is gone).
    next_header: Option<(usize, u8)>,
    /// Payload offset in bytes.
    offset: usize,
    last: bool,
    data: &'a [u8],
}

/// The fragment in `packet`, `None` if it is no fragment (an IPv6 atomic fragment is
/// none: it holds the whole datagram) or not a packet we can read.
fn fragment(packet: &[u8]) -> Option<Fragment<'_>> {
    match packet.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(packet).ok()?;
            if !ip.more_frags() && ip.frag_offset() == 0 {
                return None;
            }
            Some(Fragment {
                key: Key::V4 {
                    src: ip.src_addr().octets(),
                    dst: ip.dst_addr().octets(),
                    proto: ip.protocol(),
                    ident: ip.ident(),
                },
                header: packet.get(..ip.header_len())?,
                next_header: None,
                offset: usize::from(ip.frag_offset()),
                last: !ip.more_frags(),
                data: packet.get(ip.header_len()..usize::from(ip.total_len()))?,
            })
        }
        6 => {
            let ip = ipv6::Packet::new_checked(packet).ok()?;
            let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            let area = packet.get(..end)?;
            let (nh_at, at) = fragment_header(area)?;
            let fh = area.get(at..at.checked_add(FRAGMENT_HEADER_LEN)?)?;
            let (&next, offlg, ident) = match fh {
                [next, _, o1, o2, i @ ..] => (next, u16::from_be_bytes([*o1, *o2]), i),
                _ => return None,
            };
            let offset = usize::from(offlg & 0xfff8);
            let last = offlg & 1 == 0;
            if offset == 0 && last {
                return None;
            }
            Some(Fragment {
                key: Key::V6 {
                    src: ip.src_addr().octets(),
                    dst: ip.dst_addr().octets(),
                    ident: u32::from_be_bytes(ident.try_into().ok()?),
                },
                header: area.get(..at)?,
                next_header: Some((nh_at, next)),
                offset,
                last,
                data: area.get(at + FRAGMENT_HEADER_LEN..)?,
            })
        }
        _ => None,
    }
}

/// In an IPv6 packet (bounded by its payload length), the offset of the next-header
/// byte that names the fragment header, and the fragment header's offset; `None` when
/// the extension headers before the upper layer hold none.
fn fragment_header(area: &[u8]) -> Option<(usize, usize)> {
    use ipv6::next_header as nh;
    // The fixed header's next-header field.
    let mut nh_at = 6;
    let mut off = ipv6::HEADER_LEN;
    for _ in 0..ipv6::MAX_EXTENSION_HEADERS {
        let this = *area.get(nh_at)?;
        let len = match this {
            nh::FRAGMENT => return Some((nh_at, off)),
            nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS => {
                (usize::from(*area.get(off + 1)?) + 1) * 8
            }
            nh::AH => (usize::from(*area.get(off + 1)?) + 2) * 4,
            _ => return None,
        };
        nh_at = off;
        off = off.checked_add(len)?;
    }
    None
}

/// A datagram being reassembled.
struct Pending {
    key: Key,
    /// Capture time of its first fragment.
    since_ns: u64,
    /// The first fragment's header (offset 0), once it is in.
    header: Option<Vec<u8>>,
    next_header: Option<(usize, u8)>,
    /// The payload so far (gaps are zeros).
    payload: Vec<u8>,
    /// Byte ranges of `payload` received: sorted, disjoint, not adjacent.
    runs: Vec<Range<usize>>,
    /// The payload's length, once the last fragment is in.
    end: Option<usize>,
    /// Frames of the fragments held.
    frames: Vec<usize>,
}

impl Pending {
    fn timeout_ns(&self) -> u64 {
        match self.key {
            Key::V4 { .. } => IPV4_TIMEOUT_NS,
            Key::V6 { .. } => IPV6_TIMEOUT_NS,
        }
    }

    /// Add a fragment's bytes at `range`. `Err` gives what to do with the fragment
    /// (`Duplicate`: it alone is dropped) or the datagram (anything else).
    fn insert(&mut self, range: Range<usize>, data: &[u8], last: bool) -> Result<(), Reason> {
        if range.is_empty() {
            return Err(Reason::Invalid);
        }
        if range.end > MAX_DATAGRAM_LEN {
            return Err(Reason::Oversized);
        }
        let held_end = self.runs.last().map_or(0, |r| r.end);
        match (last, self.end) {
            (true, Some(end)) if end != range.end => return Err(Reason::Invalid),
            (true, _) if held_end > range.end => return Err(Reason::Invalid),
            (false, Some(end)) if range.end > end => return Err(Reason::Invalid),
            _ => {}
        }
        // The first run that ends after the new range's start is the only one that
        // can hold its first byte; any overlap starts there.
        let k = self.runs.partition_point(|r| r.end <= range.start);
        if let Some(r) = self.runs.get(k)
            && r.start < range.end
        {
            return Err(if r.start <= range.start && range.end <= r.end {
                Reason::Duplicate
            } else {
                Reason::Overlapping
            });
        }
        if self.payload.len() < range.end {
            self.payload.resize(range.end, 0);
        }
        self.payload
            .get_mut(range.clone())
            .ok_or(Reason::Invalid)?
            .copy_from_slice(data.get(..range.len()).ok_or(Reason::Invalid)?);
        if last {
            self.end = Some(range.end);
        }
        // Merge with the runs it touches: the one ending at its start, the one starting
        // at its end.
        let i = self.runs.partition_point(|r| r.end < range.start);
        let mut merged = range;
        let mut j = i;
        while let Some(r) = self.runs.get(j) {
            if r.start > merged.end {
                break;
            }
            merged = merged.start.min(r.start)..merged.end.max(r.end);
            j += 1;
        }
        self.runs.splice(i..j, [merged]);
        Ok(())
    }

    /// The rebuilt packet, once every byte up to the end is in.
    fn complete(&self) -> Option<Result<Vec<u8>, Reason>> {
        let end = self.end?;
        match self.runs.as_slice() {
            [only] if *only == (0..end) => {}
            _ => return None,
        }
        let header = self.header.as_deref()?;
        let payload = self.payload.get(..end)?;
        Some(rebuild(header, self.next_header, payload))
    }
}

/// Header and payload as one unfragmented packet, its length fields set.
fn rebuild(
    header: &[u8],
    next_header: Option<(usize, u8)>,
    payload: &[u8],
) -> Result<Vec<u8>, Reason> {
    let mut p = Vec::with_capacity(header.len() + payload.len());
    p.extend_from_slice(header);
    p.extend_from_slice(payload);
    match next_header {
        None => {
            let total = u16::try_from(p.len()).map_err(|_| Reason::Oversized)?;
            // Unfragmented: MF and the offset cleared, DF as the first fragment had it.
            let df = be16(&p, FLAGS_FRAGMENT_OFFSET) & DONT_FRAGMENT;
            set_be16(&mut p, FLAGS_FRAGMENT_OFFSET, df);
            let mut ip = ipv4::Packet::new_unchecked(&mut p[..]);
            ip.set_total_len(total);
            ip.fill_checksum();
        }
        Some((at, next)) => {
            let len = p.len().saturating_sub(ipv6::HEADER_LEN);
            let len = u16::try_from(len).map_err(|_| Reason::Oversized)?;
            ipv6::Packet::new_unchecked(&mut p[..]).set_payload_len(len);
            *p.get_mut(at).ok_or(Reason::Invalid)? = next;
        }
    }
    Ok(p)
}

/// Fragments waiting for the rest of their datagram.
#[derive(Default)]
pub struct Reassembler {
    /// Oldest first.
    pending: Vec<Pending>,
    reassembled: usize,
    dropped: Dropped,
    /// Frames of dropped fragments not yet taken by [`Reassembler::take_dropped_frames`].
    dropped_frames: Vec<usize>,
}

impl core::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reassembler")
            .field("pending", &self.pending.len())
            .field("reassembled", &self.reassembled)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Datagrams rebuilt so far.
    pub fn reassembled(&self) -> usize {
        self.reassembled
    }

    /// Fragments dropped so far, by reason.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Datagrams waiting for fragments.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The frames of fragments dropped since the last call.
    pub fn take_dropped_frames(&mut self) -> Vec<usize> {
        core::mem::take(&mut self.dropped_frames)
    }

    /// Take the IP packet of `frame`, captured at `ts_ns`.
    pub fn push(&mut self, frame: usize, ts_ns: u64, packet: &[u8]) -> Pushed {
        let Some(frag) = fragment(packet) else {
            return Pushed::Whole;
        };
        self.expire(ts_ns);
        let mut data = frag.data;
        let mut len = data.len();
        if !frag.last && !len.is_multiple_of(FRAGMENT_UNIT) {
            match frag.key {
                // Linux cuts an IPv4 fragment down to the unit...
                Key::V4 { .. } => len -= len % FRAGMENT_UNIT,
                // ...and refuses an IPv6 one (RFC 8200 §4.5), keeping the datagram.
                Key::V6 { .. } => {
                    self.drop_frames(Reason::Invalid, &[frame]);
                    return Pushed::Held;
                }
            }
            data = data.get(..len).unwrap_or(&[]);
        }
        let i = match self.pending.iter().position(|p| p.key == frag.key) {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING_DATAGRAMS {
                    let oldest = self.pending.remove(0);
                    self.drop_frames(Reason::Evicted, &oldest.frames);
                }
                self.pending.push(Pending {
                    key: frag.key,
                    since_ns: ts_ns,
                    header: None,
                    next_header: None,
                    payload: Vec::new(),
                    runs: Vec::new(),
                    end: None,
                    frames: Vec::new(),
                });
                self.pending.len() - 1
            }
        };
        let Some(p) = self.pending.get_mut(i) else {
            return Pushed::Held;
        };
        let range = frag.offset..frag.offset.saturating_add(len);
        match p.insert(range, data, frag.last) {
            Ok(()) => {}
            Err(Reason::Duplicate) => {
                self.drop_frames(Reason::Duplicate, &[frame]);
                return Pushed::Held;
            }
            Err(reason) => {
                let p = self.pending.remove(i);
                self.drop_frames(reason, &p.frames);
                self.drop_frames(reason, &[frame]);
                return Pushed::Held;
            }
        }
        p.frames.push(frame);
        if frag.offset == 0 {
            p.header = Some(frag.header.to_vec());
            p.next_header = frag.next_header;
        }
        match p.complete() {
            None => Pushed::Held,
            Some(result) => {
                let p = self.pending.remove(i);
                match result {
                    Ok(packet) => {
                        self.reassembled += 1;
                        Pushed::Complete(packet)
                    }
                    Err(reason) => {
                        self.drop_frames(reason, &p.frames);
                        Pushed::Held
                    }
                }
            }
        }
    }

    /// The end of the capture: what still waits is incomplete.
    pub fn finish(&mut self) {
        for p in core::mem::take(&mut self.pending) {
            self.drop_frames(Reason::Incomplete, &p.frames);
        }
    }

    /// Drop the datagrams that have waited too long at capture time `now_ns` (a clock
    /// going backwards expires nothing).
    fn expire(&mut self, now_ns: u64) {
        let mut expired = Vec::new();
        self.pending.retain(|p| {
            let stale = now_ns.saturating_sub(p.since_ns) > p.timeout_ns();
            if stale {
                expired.extend_from_slice(&p.frames);
            }
            !stale
        });
        self.drop_frames(Reason::TimedOut, &expired);
    }

    fn drop_frames(&mut self, reason: Reason, frames: &[usize]) {
        self.dropped.count(reason, frames.len());
        self.dropped_frames.extend_from_slice(frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IPPROTO_UDP;
    use crate::wire;

    /// A UDP datagram of `len` payload bytes (a counting pattern) as an IPv4 packet.
    fn datagram4(len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        wire::ipv4::tests::build(
            [192, 0, 2, 1],
            [198, 51, 100, 1],
            IPPROTO_UDP,
            &wire::udp::tests::build(5060, 5060, &payload),
        )
    }

    /// IPv4 fragment of `whole` (header 20 bytes): payload bytes `range`, MF unless it
    /// ends the payload.
    fn frag4(whole: &[u8], range: Range<usize>) -> Vec<u8> {
        let payload = &whole[20..];
        let more = range.end < payload.len();
        let mut v = whole[..20].to_vec();
        v.extend_from_slice(&payload[range.clone()]);
        let mut ip = ipv4::Packet::new_unchecked(&mut v[..]);
        ip.set_total_len((20 + range.len()) as u16);
        let field = (range.start / 8) as u16 | if more { 0x2000 } else { 0 };
        v[6..8].copy_from_slice(&field.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut v[..]).fill_checksum();
        v
    }

    fn a6(s: &str) -> core::net::Ipv6Addr {
        s.parse().unwrap()
    }

    /// A UDP datagram as an IPv6 packet behind `ext` (chained, first type `first`,
    /// the last naming UDP).
    fn datagram6(first: u8, ext: &[u8], len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        wire::ipv6::tests::build(
            a6("2001:db8::1"),
            a6("2001:db8::2"),
            first,
            ext,
            &wire::udp::tests::build(5060, 5060, &payload),
        )
    }

    /// IPv6 fragment of `whole`, whose unfragmentable part is `unfrag` bytes and whose
    /// byte `nh_at` names the fragmentable part's first header.
    fn frag6(whole: &[u8], unfrag: usize, nh_at: usize, range: Range<usize>, id: u32) -> Vec<u8> {
        let payload = &whole[unfrag..];
        let more = range.end < payload.len();
        let mut v = whole[..unfrag].to_vec();
        let next = v[nh_at];
        v[nh_at] = 44;
        let offlg = range.start as u16 | u16::from(more);
        v.extend_from_slice(&[next, 0]);
        v.extend_from_slice(&offlg.to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&payload[range.clone()]);
        let plen = (v.len() - 40) as u16;
        v[4..6].copy_from_slice(&plen.to_be_bytes());
        v
    }

    fn push_all(r: &mut Reassembler, frames: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| match r.push(i + 1, 1_000, f) {
                Pushed::Complete(p) => Some(p),
                Pushed::Held => None,
                Pushed::Whole => panic!("frame {} not a fragment", i + 1),
            })
            .collect()
    }

    #[test]
    fn ipv4_in_order_and_out_of_order() {
        let whole = datagram4(3000);
        let pieces = [0..1480, 1480..2960, 2960..3008];
        let frags: Vec<Vec<u8>> = pieces.iter().map(|r| frag4(&whole, r.clone())).collect();
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            let mut r = Reassembler::new();
            let shuffled: Vec<Vec<u8>> = order.iter().map(|&i| frags[i].clone()).collect();
            let got = push_all(&mut r, &shuffled);
            assert_eq!(got[..2], [None, None], "{order:?}");
            let p = got[2].as_ref().expect("complete at the last frame");
            // The rebuilt packet is the original, DF and checksum included.
            let mut want = whole.clone();
            want[6] = 0;
            ipv4::Packet::new_unchecked(&mut want[..]).fill_checksum();
            assert_eq!(p, &want, "{order:?}");
            assert!(ipv4::Packet::new_checked(&p[..]).unwrap().verify_checksum());
            assert_eq!(wire::dissect(p).unwrap().payload.len(), 3000);
            assert_eq!(
                (r.reassembled(), r.pending(), r.dropped().total()),
                (1, 0, 0)
            );
        }
        // Not a fragment: untouched.
        let mut r = Reassembler::new();
        assert_eq!(r.push(1, 0, &whole), Pushed::Whole);
        assert_eq!(r.push(2, 0, &[0x45]), Pushed::Whole);
        assert_eq!(r.push(3, 0, &[]), Pushed::Whole);
    }

    #[test]
    fn ipv4_header_options_come_from_the_first_fragment() {
        // A 24-byte header (one 4-byte option: NOP NOP NOP EOL).
        let mut whole = datagram4(100);
        whole.splice(20..20, [1, 1, 1, 0]);
        whole[0] = 0x46;
        let total = whole.len() as u16;
        whole[2..4].copy_from_slice(&total.to_be_bytes());
        let frag = |range: Range<usize>, hl: usize| {
            let mut v = whole[..hl].to_vec();
            v[0] = 0x40 | (hl / 4) as u8;
            v.extend_from_slice(&whole[24..][range.clone()]);
            let len = v.len() as u16;
            v[2..4].copy_from_slice(&len.to_be_bytes());
            let more = if range.end < 108 { 0x2000 } else { 0 };
            v[6..8].copy_from_slice(&((range.start / 8) as u16 | more).to_be_bytes());
            v
        };
        let mut r = Reassembler::new();
        // The later fragment without the option arrives first.
        let got = push_all(&mut r, &[frag(64..108, 20), frag(0..64, 24)]);
        let p = got[1].as_ref().unwrap();
        assert_eq!(p.len(), whole.len());
        assert_eq!(&p[20..24], &[1, 1, 1, 0]);
        assert_eq!(wire::dissect(p).unwrap().payload.len(), 100);
    }

    #[test]
    fn ipv6_fragment_header_after_extension_headers() {
        // Hop-by-hop (8 bytes) then destination options (8 bytes), then the fragment
        // header; the fragmentable part starts with UDP.
        let ext = [60, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
        let whole = datagram6(0, &ext, 2000);
        // The byte naming UDP is the destination options header's first (offset 48).
        let (unfrag, nh_at) = (56, 48);
        let frags: Vec<Vec<u8>> = [0..1232, 1232..2008]
            .into_iter()
            .map(|r| frag6(&whole, unfrag, nh_at, r, 0xdead_beef))
            .collect();
        assert!(matches!(
            wire::dissect(&frags[0]),
            Err(wire::Error::Fragment)
        ));
        for order in [[0, 1], [1, 0]] {
            let mut r = Reassembler::new();
            let got = push_all(&mut r, &[frags[order[0]].clone(), frags[order[1]].clone()]);
            assert_eq!(got[1].as_ref(), Some(&whole), "{order:?}");
        }
        // Right after the fixed header.
        let whole = datagram6(17, &[], 3000);
        let frags: Vec<Vec<u8>> = [0..1448, 1448..2896, 2896..3008]
            .into_iter()
            .map(|r| frag6(&whole, 40, 6, r, 7))
            .collect();
        let mut r = Reassembler::new();
        let got = push_all(
            &mut r,
            &[frags[1].clone(), frags[2].clone(), frags[0].clone()],
        );
        assert_eq!(got[2].as_ref(), Some(&whole));
        assert_eq!(
            wire::dissect(got[2].as_ref().unwrap()).unwrap().dst_port,
            5060
        );
        // An atomic fragment (offset 0, M clear) is whole already.
        let mut atomic = frag6(&whole, 40, 6, 0..3008, 8);
        assert_eq!(r.push(9, 0, &atomic), Pushed::Whole);
        // A chain that does not lead to a fragment header holds none to reassemble.
        atomic[6] = 60;
        assert_eq!(r.push(10, 0, &atomic), Pushed::Whole);
    }

    #[test]
    fn duplicates_are_ignored_overlaps_discard_the_datagram() {
        let whole = datagram4(3000);
        let f = |r: Range<usize>| frag4(&whole, r);
        // A fragment repeated, and one inside what two adjacent ones already cover.
        let mut r = Reassembler::new();
        let got = push_all(
            &mut r,
            &[
                f(0..1480),
                f(0..1480),
                f(1480..2960),
                f(1000..2000),
                f(2960..3008),
            ],
        );
        assert_eq!(got.iter().filter(|g| g.is_some()).count(), 1);
        assert!(got[4].is_some());
        assert_eq!(r.dropped().duplicate, 2);
        assert_eq!(r.take_dropped_frames(), vec![2, 4]);
        // Partial overlaps: the whole datagram goes, and nothing more completes it.
        for overlap in [0..16, 2000..3008, 2952..3008] {
            let mut r = Reassembler::new();
            let got = push_all(&mut r, &[f(8..1480), f(1480..2960), f(overlap.clone())]);
            assert!(got.iter().all(Option::is_none));
            assert_eq!(r.dropped().overlapping, 3, "{overlap:?}");
            assert_eq!(r.pending(), 0);
            assert_eq!(r.take_dropped_frames(), vec![1, 2, 3]);
        }
        // The same overlap in IPv6.
        let w6 = datagram6(17, &[], 2000);
        let g = |r: Range<usize>| frag6(&w6, 40, 6, r, 1);
        let mut r = Reassembler::new();
        let got = push_all(&mut r, &[g(0..1000), g(992..2008)]);
        assert!(got.iter().all(Option::is_none));
        assert_eq!(r.dropped().overlapping, 2);
    }

    #[test]
    fn inconsistent_lengths() {
        let whole = datagram4(3000);
        let f = |r: Range<usize>| frag4(&whole, r);
        let mut last_early = frag4(&whole, 1480..1488);
        last_early[6] &= !0x20;
        // Two different ends; data past the end; an empty fragment.
        for frames in [
            vec![f(2960..3008), last_early.clone()],
            vec![f(1480..2960), last_early.clone()],
            vec![last_early.clone(), f(1480..2960)],
            vec![f(0..1480), f(1480..1480)],
        ] {
            let mut r = Reassembler::new();
            assert!(push_all(&mut r, &frames).iter().all(Option::is_none));
            assert_eq!(r.dropped().invalid, 2, "{frames:02x?}");
            assert_eq!(r.pending(), 0);
        }
        // IPv4: a middle fragment of 1481 bytes is cut to 1480 (the next one repeats
        // the extra byte); IPv6: one of 1001 bytes is refused alone.
        let mut r = Reassembler::new();
        let got = push_all(&mut r, &[f(0..1481), f(1480..3008)]);
        assert_eq!(got[1].as_ref().map(Vec::len), Some(whole.len()));
        let w6 = datagram6(17, &[], 2000);
        let g = |r: Range<usize>| frag6(&w6, 40, 6, r, 1);
        let mut r = Reassembler::new();
        let got = push_all(&mut r, &[g(0..1001), g(1000..2008), g(0..1000)]);
        assert_eq!(got[2].as_ref(), Some(&w6));
        assert_eq!(r.dropped().invalid, 1);
        assert_eq!(r.take_dropped_frames(), vec![1]);
    }

    #[test]
    fn oversized_datagrams_are_dropped() {
        // The last fragment at the highest offset: past 65,535 bytes.
        let whole = datagram4(100);
        let mut far = frag4(&whole, 0..8);
        far[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
        let mut r = Reassembler::new();
        assert_eq!(r.push(1, 0, &far), Pushed::Held);
        assert_eq!(r.dropped().oversized, 1);
        // Exactly at the limit of the payload, but the header makes the packet too long.
        let mut r = Reassembler::new();
        let mut last = whole[..20].to_vec();
        last.extend_from_slice(&[0; 7]);
        last[2..4].copy_from_slice(&27u16.to_be_bytes());
        last[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
        assert_eq!(r.push(1, 0, &last), Pushed::Held);
        // The first fragment as 16 pieces of 4088 bytes + the rest.
        let mut n = 2;
        let mut off = 0;
        while off < 65_528 {
            let len = (65_528 - off).min(4088);
            let mut v = whole[..20].to_vec();
            v.extend(vec![0; len]);
            v[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
            v[6..8].copy_from_slice(&((off / 8) as u16 | 0x2000).to_be_bytes());
            assert_eq!(r.push(n, 0, &v), Pushed::Held);
            off += len;
            n += 1;
        }
        assert_eq!(r.dropped().oversized, n - 1);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn eviction_and_timeouts() {
        let mut r = Reassembler::new();
        let first_of = |ident: u16| {
            let mut v = frag4(&datagram4(100), 0..64);
            v[4..6].copy_from_slice(&ident.to_be_bytes());
            v
        };
        for i in 0..MAX_PENDING_DATAGRAMS {
            assert_eq!(r.push(i + 1, 0, &first_of(i as u16)), Pushed::Held);
        }
        assert_eq!(
            (r.pending(), r.dropped().total()),
            (MAX_PENDING_DATAGRAMS, 0)
        );
        // One more pushes out the oldest (frame 1).
        assert_eq!(r.push(100, 0, &first_of(9999)), Pushed::Held);
        assert_eq!(r.dropped().evicted, 1);
        assert_eq!(r.take_dropped_frames(), vec![1]);
        // The second datagram's last fragment still completes it.
        let mut rest = frag4(&datagram4(100), 64..108);
        rest[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert!(matches!(r.push(101, 0, &rest), Pushed::Complete(_)));
        // ...but not after the timeout: the third's is too late, and starts a new
        // datagram that the end of the capture finds incomplete.
        rest[4..6].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(r.push(102, IPV4_TIMEOUT_NS + 1, &rest), Pushed::Held);
        assert_eq!(r.dropped().timed_out, MAX_PENDING_DATAGRAMS - 1);
        assert_eq!(r.pending(), 1);
        r.finish();
        assert_eq!(r.dropped().incomplete, 1);
        assert_eq!(r.pending(), 0);
        let d = r.dropped();
        assert_eq!(d.total(), 1 + (MAX_PENDING_DATAGRAMS - 1) + 1);
        assert_eq!(r.take_dropped_frames().len(), MAX_PENDING_DATAGRAMS);
        // A clock going backwards expires nothing.
        let mut r = Reassembler::new();
        assert_eq!(r.push(1, 5 * IPV4_TIMEOUT_NS, &first_of(1)), Pushed::Held);
        assert_eq!(r.push(2, 0, &first_of(2)), Pushed::Held);
        assert_eq!(r.pending(), 2);
    }

    #[test]
    fn datagrams_are_told_apart_by_addresses_protocol_and_ident() {
        let whole = datagram4(200);
        let a = frag4(&whole, 0..104);
        let mut b = frag4(&whole, 104..208);
        // Same ident, another protocol: another datagram.
        b[9] = 6;
        ipv4::Packet::new_unchecked(&mut b[..]).fill_checksum();
        let mut r = Reassembler::new();
        assert_eq!(push_all(&mut r, &[a.clone(), b]), [None, None]);
        assert_eq!(r.pending(), 2);
        let mut c = frag4(&whole, 104..208);
        c[12] = 10;
        assert_eq!(r.push(3, 0, &c), Pushed::Held);
        assert_eq!(r.pending(), 3);
        let d = frag4(&whole, 104..208);
        assert!(matches!(r.push(4, 0, &d), Pushed::Complete(_)));
    }

    #[test]
    fn every_prefix_and_bit_flip_is_safe() {
        let w4 = datagram4(300);
        let w6 = datagram6(0, &[17, 0, 1, 4, 0, 0, 0, 0], 300);
        let mut frames = vec![
            frag4(&w4, 0..160),
            frag4(&w4, 160..308),
            frag6(&w6, 48, 40, 0..160, 3),
            frag6(&w6, 48, 40, 160..308, 3),
        ];
        frames.push(w4.clone());
        for i in 0..frames.len() {
            let f = frames[i].clone();
            for cut in 0..f.len() {
                let mut r = Reassembler::new();
                for g in &frames {
                    let _ = r.push(1, 0, g);
                }
                let _ = r.push(2, 0, &f[..cut]);
            }
            for byte in 0..f.len().min(64) {
                for bit in 0..8 {
                    let mut g = f.clone();
                    g[byte] ^= 1 << bit;
                    let mut r = Reassembler::new();
                    let _ = r.push(1, 0, &g);
                    for h in &frames {
                        if let Pushed::Complete(p) = r.push(2, 0, h) {
                            assert!(p.len() <= MAX_DATAGRAM_LEN + ipv6::HEADER_LEN);
                        }
                    }
                    r.finish();
                }
            }
        }
    }
}
