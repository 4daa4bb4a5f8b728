//! Connection-tracking model shared by the netlink layer and the helpers: tuples,
//! the parts of a conntrack a helper needs, and the expectations it asks for.

use core::net::IpAddr;

/// Direction of a packet relative to the connection's original tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Original = 0,
    Reply = 1,
}

impl Direction {
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// `enum ip_conntrack_info` as the queue reports it in NFQA_CT_INFO.
pub mod ctinfo {
    pub const ESTABLISHED: u32 = 0;
    pub const RELATED: u32 = 1;
    pub const NEW: u32 = 2;
    pub const ESTABLISHED_REPLY: u32 = 3;
    pub const RELATED_REPLY: u32 = 4;

    /// Values from IP_CT_IS_REPLY (3) upwards are reply-direction states.
    pub fn direction(info: u32) -> super::Direction {
        if info >= ESTABLISHED_REPLY {
            super::Direction::Reply
        } else {
            super::Direction::Original
        }
    }
}

/// Conntrack status bits (enum ip_conntrack_status) the helpers look at.
pub mod status {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const NAT_MASK: u32 = SRC_NAT | DST_NAT;
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Address family as nfgenmsg and the helper tuple spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const AF_INET: u8 = 2;
    pub const AF_INET6: u8 = 10;

    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub fn af(self) -> u8 {
        match self {
            Family::Ipv4 => Self::AF_INET,
            Family::Ipv6 => Self::AF_INET6,
        }
    }

    pub fn from_af(af: u8) -> Option<Family> {
        match af {
            Self::AF_INET => Some(Family::Ipv4),
            Self::AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }
}

/// A conntrack tuple: one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Tuple {
    /// The same connection seen from the other end: the reply tuple of a conntrack
    /// without NAT.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// The parts of a conntrack entry (from NFQA_CT) that helpers and the daemon use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conntrack {
    pub orig: Tuple,
    pub reply: Tuple,
    pub status: u32,
    pub id: Option<u32>,
    pub zone: Option<u16>,
}

impl Conntrack {
    pub fn tuple(&self, dir: Direction) -> &Tuple {
        match dir {
            Direction::Original => &self.orig,
            Direction::Reply => &self.reply,
        }
    }

    pub fn is_nated(&self) -> bool {
        self.status & status::NAT_MASK != 0
    }
}

/// One direction's TCP sequence adjustment (struct nf_ct_seqadj): packets after
/// `correction_pos` are shifted by `offset_after`, earlier ones by `offset_before`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqAdj {
    pub correction_pos: u32,
    pub offset_before: i32,
    pub offset_after: i32,
}

impl SeqAdj {
    /// The adjustment after a segment starting at `seq` grew by `delta` bytes, by the
    /// kernel's rule (nf_ct_seqadj_set): a new correction only for a segment after the
    /// last one, so a retransmission of the rewritten segment does not count twice.
    pub fn after_change(self, seq: u32, delta: i32) -> SeqAdj {
        let later = (self.correction_pos.wrapping_sub(seq) as i32) < 0;
        if delta == 0 || !(self.offset_before == self.offset_after || later) {
            return self;
        }
        SeqAdj {
            correction_pos: seq,
            offset_before: self.offset_after,
            offset_after: self.offset_after.wrapping_add(delta),
        }
    }
}

/// Expectation flags (NF_CT_EXPECT_*).
pub mod expect_flags {
    pub const PERMANENT: u32 = 1 << 0;
    pub const INACTIVE: u32 = 1 << 1;
}

/// An expectation a helper asks for: a future connection from `src` (any source port
/// when `src_port` is None) to `dst:dst_port`, related to the master connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Index of the helper policy (expectation class) this counts against.
    pub class: u32,
    pub proto: u8,
    /// The unspecified address (0.0.0.0, ::) of `dst`'s family for any source address,
    /// as the kernel spells a wildcard (address and mask zero): see [`Expectation::any_source`].
    pub src: IpAddr,
    pub src_port: Option<u16>,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub flags: u32,
    /// Set when the master connection is NATed: the expected connection must be
    /// translated back to the real endpoint ("nat-follow-master").
    pub nat: Option<ExpectNat>,
    /// The helper the expected connection gets (CTA_EXPECT_HELP_NAME), as the kernel's
    /// SIP helper gives a registration's expectation its own: the incoming call it
    /// admits carries the SDP to act on, and may arrive on a port no firewall rule
    /// assigns the helper to. None: the expected connection is not helped.
    pub helper: Option<&'static str>,
}

/// The NAT section of an expectation (CTA_EXPECT_NAT). The kernel's nat-follow-master
/// maps the expected connection's source to where the master's `dir` packets go and
/// its destination to the master's real (untranslated) `!dir` source address with
/// `saved_port`: the endpoint the announcement named before it was rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectNat {
    /// The master direction the expected connection travels in (the kernel's exp->dir).
    pub dir: Direction,
    /// The real endpoint behind the translation (exp->saved_addr, exp->saved_proto).
    pub saved_addr: IpAddr,
    pub saved_port: u16,
}

impl Expectation {
    /// The source of an expectation open to any address: the unspecified address of
    /// `dst`'s family.
    pub fn any_source_like(dst: IpAddr) -> IpAddr {
        match dst {
            IpAddr::V4(_) => IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(core::net::Ipv6Addr::UNSPECIFIED),
        }
    }

    /// Whether any source address matches (the kernel masks the source address out).
    pub fn any_source(&self) -> bool {
        self.src.is_unspecified()
    }

    /// The tuple the kernel matches (a wildcard source port is 0 with a 0 mask).
    pub fn tuple(&self) -> Tuple {
        Tuple {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            src_port: self.src_port.unwrap_or(0),
            dst_port: self.dst_port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_swaps_ends_and_keeps_the_protocol() {
        let t = Tuple {
            src: "192.0.2.2".parse().unwrap(),
            dst: "198.51.100.2".parse().unwrap(),
            proto: IPPROTO_UDP,
            src_port: 40000,
            dst_port: 69,
        };
        let r = t.reversed();
        assert_eq!(
            (r.src, r.dst, r.src_port, r.dst_port),
            (t.dst, t.src, 69, 40000)
        );
        assert_eq!(r.proto, IPPROTO_UDP);
        assert_eq!(r.reversed(), t);
    }

    #[test]
    fn seqadj_follows_the_kernels_rule() {
        let none = SeqAdj::default();
        let first = none.after_change(1000, 3);
        assert_eq!(
            first,
            SeqAdj {
                correction_pos: 1000,
                offset_before: 0,
                offset_after: 3
            }
        );
        // The same segment again (retransmission): unchanged.
        assert_eq!(first.after_change(1000, 3), first);
        // An older segment: unchanged.
        assert_eq!(first.after_change(900, 3), first);
        // A later segment that shrinks.
        let second = first.after_change(1100, -2);
        assert_eq!(
            second,
            SeqAdj {
                correction_pos: 1100,
                offset_before: 3,
                offset_after: 1
            }
        );
        // Across the sequence wrap.
        let w = SeqAdj {
            correction_pos: 0xffff_fff0,
            offset_before: 0,
            offset_after: 5,
        };
        assert_eq!(w.after_change(0x10, 1).correction_pos, 0x10);
        assert_eq!(none.after_change(5, 0), none);
    }
}
