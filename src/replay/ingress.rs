//! From a capture's frame to the IP packet conntrack sees on a router that terminates the
//! capture's tunnels: the link layer stripped ([`capture::l3`]), IP fragments reassembled
//! ([`reassembly`]) and tunnels opened ([`tunnel`]), again for each tunnel inside a
//! tunnel up to [`MAX_TUNNEL_DEPTH`] (fragments inside a tunnel are reassembled after
//! it is opened, as the kernel does for the packets its tunnel device hands back).
//!
//! The packet inside a tunnel replaces the tunnel packet: replay tracks the connection
//! inside, not the tunnel's own flow (a GTP-U or GRE flow has no helper).

use std::borrow::Cow;

use super::capture::{self, Record};
use super::reassembly::{self, Pushed, Reassembler};
use super::tunnel;

/// Tunnels opened inside one another at most; a packet nested deeper is handed over as
/// the tunnel packet it still is.
pub const MAX_TUNNEL_DEPTH: usize = 4;

/// What a frame gives conntrack.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// An IP packet: as captured, reassembled, or out of a tunnel.
    Packet(Cow<'a, [u8]>),
    /// The frame carries no IPv4 or IPv6 (another link type or EtherType).
    NotIp,
    /// An IP fragment, held until its datagram is complete, or dropped (see
    /// [`Ingress::take_dropped_frames`]).
    Fragment,
}

/// The reassembly state and counters of one capture.
#[derive(Debug, Default)]
pub struct Ingress {
    reassembler: Reassembler,
    /// Packets handed over from inside a tunnel.
    decapsulated: usize,
}

impl Ingress {
    pub fn new() -> Ingress {
        Ingress::default()
    }

    /// What conntrack sees of `rec`; a reassembled datagram comes at the frame of the
    /// fragment that completed it.
    pub fn frame<'a>(&mut self, rec: &Record<'a>) -> Seen<'a> {
        match capture::l3(rec.linktype, rec.data) {
            Some(l3) => self.packet(rec.number, rec.ts_ns, l3),
            None => Seen::NotIp,
        }
    }

    /// What conntrack sees of the IP packet `l3` of `frame`.
    pub fn packet<'a>(&mut self, frame: usize, ts_ns: u64, l3: &'a [u8]) -> Seen<'a> {
        let mut packet = Cow::Borrowed(l3);
        let mut depth = 0;
        loop {
            match self.reassembler.push(frame, ts_ns, &packet) {
                Pushed::Whole => {}
                Pushed::Held => return Seen::Fragment,
                Pushed::Complete(whole) => packet = Cow::Owned(whole),
            }
            if depth == MAX_TUNNEL_DEPTH {
                break;
            }
            let inner = match &packet {
                Cow::Borrowed(outer) => tunnel::decapsulate(outer).map(|i| Cow::Borrowed(i.packet)),
                Cow::Owned(outer) => {
                    tunnel::decapsulate(outer).map(|i| Cow::Owned(i.packet.to_vec()))
                }
            };
            match inner {
                Some(inner) => packet = inner,
                None => break,
            }
            depth += 1;
        }
        if depth > 0 {
            self.decapsulated += 1;
        }
        Seen::Packet(packet)
    }

    /// The end of the capture: fragments still waiting are dropped as incomplete.
    pub fn finish(&mut self) {
        self.reassembler.finish();
    }

    /// Datagrams reassembled from fragments so far.
    pub fn reassembled(&self) -> usize {
        self.reassembler.reassembled()
    }

    /// Packets taken out of tunnels so far.
    pub fn decapsulated(&self) -> usize {
        self.decapsulated
    }

    /// Fragments dropped so far, by reason.
    pub fn dropped(&self) -> reassembly::Dropped {
        self.reassembler.dropped()
    }

    /// Frames of fragments dropped since the last call.
    pub fn take_dropped_frames(&mut self) -> Vec<usize> {
        self.reassembler.take_dropped_frames()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IPPROTO_UDP;
    use crate::replay::tunnel::{protocol, tests::inner4};
    use crate::wire::{self, ipv4};

    const A: [u8; 4] = [192, 0, 2, 1];
    const B: [u8; 4] = [198, 51, 100, 1];

    fn ipip(inner: &[u8]) -> Vec<u8> {
        ipv4::tests::build(A, B, protocol::IPV4, inner)
    }

    /// `packet` (IPv4, 20-byte header) as two fragments.
    fn halves(packet: &[u8], ident: u16) -> [Vec<u8>; 2] {
        let payload = &packet[20..];
        let cut = (payload.len() / 2) & !7;
        [(0..cut, true), (cut..payload.len(), false)].map(|(r, more)| {
            let mut v = packet[..20].to_vec();
            v.extend_from_slice(&payload[r.clone()]);
            let len = v.len() as u16;
            v[2..4].copy_from_slice(&len.to_be_bytes());
            v[4..6].copy_from_slice(&ident.to_be_bytes());
            let field = (r.start / 8) as u16 | if more { 0x2000 } else { 0 };
            v[6..8].copy_from_slice(&field.to_be_bytes());
            v
        })
    }

    /// An IPv4 packet without its identification, flags and checksum (which a
    /// reassembled packet takes from its fragments).
    fn sans_ident(p: Option<Vec<u8>>) -> Option<Vec<u8>> {
        p.map(|mut p| {
            p[4..8].fill(0);
            p[10..12].fill(0);
            p
        })
    }

    fn seen(i: &mut Ingress, frame: usize, p: &[u8]) -> Option<Vec<u8>> {
        match i.packet(frame, 0, p) {
            Seen::Packet(p) => Some(p.into_owned()),
            Seen::Fragment => None,
            Seen::NotIp => panic!("not IP"),
        }
    }

    #[test]
    fn plain_packets_are_borrowed() {
        let p = inner4();
        let mut i = Ingress::new();
        assert!(matches!(i.packet(1, 0, &p), Seen::Packet(Cow::Borrowed(b)) if b == &p[..]));
        // Out of a tunnel: still a slice of the frame.
        let outer = ipip(&ipip(&p));
        assert!(matches!(i.packet(2, 0, &outer), Seen::Packet(Cow::Borrowed(b)) if b == &p[..]));
        assert_eq!((i.decapsulated(), i.reassembled()), (1, 0));
        let rec = Record {
            number: 3,
            offset: 0,
            linktype: 147,
            ts_ns: 0,
            data: &p,
        };
        assert_eq!(i.frame(&rec), Seen::NotIp);
    }

    #[test]
    fn fragments_inside_and_outside_tunnels() {
        let inner = ipv4::tests::build(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            IPPROTO_UDP,
            &wire::udp::tests::build(5060, 5060, &[b'x'; 200]),
        );
        let mut i = Ingress::new();
        // A fragmented tunnel packet: reassembled, then opened.
        let [a, b] = halves(&ipip(&inner), 1);
        assert_eq!(seen(&mut i, 1, &a), None);
        assert_eq!(seen(&mut i, 2, &b), Some(inner.clone()));
        // Fragments inside a tunnel: opened, then reassembled.
        let [a, b] = halves(&inner, 2);
        assert_eq!(seen(&mut i, 3, &ipip(&a)), None);
        let whole = sans_ident(Some(inner.clone()));
        assert_eq!(sans_ident(seen(&mut i, 4, &ipip(&b))), whole);
        // Both, the outer fragments out of order.
        let [x, y] = halves(&inner, 3);
        let [x1, x2] = halves(&ipip(&x), 4);
        let [y1, y2] = halves(&ipip(&y), 5);
        for (n, f) in [(5, &x2), (6, &y1), (7, &x1)] {
            assert_eq!(seen(&mut i, n, f), None);
        }
        assert_eq!(sans_ident(seen(&mut i, 8, &y2)), whole);
        assert_eq!((i.reassembled(), i.decapsulated()), (5, 3));
        assert!(i.take_dropped_frames().is_empty());
        // What waits at the end is dropped.
        assert_eq!(seen(&mut i, 9, &x1), None);
        i.finish();
        assert_eq!(i.dropped().incomplete, 1);
        assert_eq!(i.take_dropped_frames(), vec![9]);
    }

    #[test]
    fn nesting_is_bounded() {
        let inner = inner4();
        let mut p = inner.clone();
        for _ in 0..MAX_TUNNEL_DEPTH {
            p = ipip(&p);
        }
        let mut i = Ingress::new();
        assert_eq!(seen(&mut i, 1, &p), Some(inner.clone()));
        // One more layer: handed over with one tunnel left.
        let deeper = ipip(&p);
        assert_eq!(seen(&mut i, 2, &deeper), Some(ipip(&inner)));
    }
}
