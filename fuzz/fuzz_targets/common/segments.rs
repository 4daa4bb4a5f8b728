//! The packet records the SIP connection targets (`sip_helper`, `sip_nat`) read after
//! their headers: `[ctl u8][len u16 BE][delta i8 (TCP, ctl bit 1)][payload]...`. ctl bit
//! 0: reply direction; on TCP, `delta` shifts the segment's sequence number from the next
//! in-order one (retransmissions, overlaps, gaps). A record cut short ends the packets.

use cthelperd::helpers::Transport;
use cthelperd::model::Direction;

/// One packet of the connection.
pub struct Segment<'a> {
    /// The whole control byte (sip_nat reads its upper bits; sip_helper does not).
    #[allow(dead_code)]
    pub ctl: u8,
    pub dir: Direction,
    pub transport: Transport,
    pub payload: &'a [u8],
}

pub struct Segments<'a> {
    rest: &'a [u8],
    tcp: bool,
    /// The next in-order sequence number of each direction.
    seq: [u32; 2],
}

impl<'a> Segments<'a> {
    pub fn new(rest: &'a [u8], tcp: bool) -> Segments<'a> {
        Segments {
            rest,
            tcp,
            seq: [1000, 900_000],
        }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        let [ctl, hi, lo, tail @ ..] = self.rest else {
            return None;
        };
        let dir = if ctl & 1 == 0 {
            Direction::Original
        } else {
            Direction::Reply
        };
        let mut tail = tail;
        let mut delta = 0i32;
        if self.tcp && ctl & 2 != 0 {
            let Some((&d, t)) = tail.split_first() else {
                self.rest = &[];
                return None;
            };
            delta = i32::from(d as i8);
            tail = t;
        }
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        self.rest = next;
        let transport = if self.tcp {
            let s = self.seq[dir.index()].wrapping_add(delta as u32);
            self.seq[dir.index()] = s.wrapping_add(len as u32);
            Transport::Tcp {
                seq: s,
                flags: 0x18,
            }
        } else {
            Transport::Udp
        };
        Some(Segment {
            ctl: *ctl,
            dir,
            transport,
            payload,
        })
    }
}
