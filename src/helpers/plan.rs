//! What a helper asks for one packet: a [`Plan`]. A helper only analyses; the daemon
//! (`daemon/effects.rs`) carries the plan out — deletes and creates expectations over
//! ctnetlink or on the verdict, searches free ports behind NAT, rewrites the payload
//! (`nat`) — and `replay` reports it. Everything is fixed-size: no allocation.
//!
//! The shapes are those SIP needs (issues #13, #14), FTP and TFTP use a subset:
//! - expectations of any class, single or as RTP/RTCP pairs whose ports the NAT port
//!   search moves together ([`Pairing`]);
//! - deletions of pending expectations by tuple (BYE, CANCEL, re-INVITE);
//! - rewrites of payload ranges whose text the helper spells ([`Replacement`]): literal
//!   bytes, an endpoint whose port the daemon decides, or a length field (SIP's
//!   Content-Length) computed after the other rewrites.

use core::fmt;

use crate::model::{Expectation, Tuple};

use super::Refusal;

/// How many expectations one packet may ask for: SIP's classes allow 1 signalling + 4
/// audio + 4 video + 2 image expectations per master (the kernel's nf_conntrack_sip
/// policy), 11 in all.
pub const MAX_EXPECTATIONS_PER_PACKET: usize = 12;

/// How many pending expectations one packet may ask to delete (a BYE removes what its
/// dialog created: at most as many as a packet may create).
pub const MAX_DELETIONS_PER_PACKET: usize = MAX_EXPECTATIONS_PER_PACKET;

/// How many refused announcements one packet may report.
pub const MAX_REFUSALS_PER_PACKET: usize = 4;

/// How many payload ranges one packet may ask to have rewritten (NAT). A SIP message
/// through NAT: Request-URI, Via (sent-by, received, rport), Contact, From, To, SDP o=,
/// session and media c=, m= ports, a=rtcp, Content-Length — about 20.
pub const MAX_REWRITES_PER_PACKET: usize = 32;

/// Bytes of replacement text one plan may hold (the rewrites' literal parts).
pub const PLAN_TEXT_MAX: usize = 1024;

// Spans index the text with u16.
const _: () = assert!(PLAN_TEXT_MAX <= u16::MAX as usize);

/// Expectations in an RTP/RTCP pair.
pub const PAIR_LEN: usize = 2;

/// Whether an expectation's port may move alone or with a partner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pairing {
    /// On its own: behind NAT the port search tries the announced port, then the next
    /// ones.
    #[default]
    Single,
    /// The RTP half of an RTP/RTCP pair: the plan's next expectation is its RTCP half, on
    /// the port after it. Both are created or neither; behind NAT the search moves
    /// both, to even RTP ports.
    Rtp,
    /// The RTCP half of the pair the previous expectation starts.
    Rtcp,
}

/// One expectation of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub exp: Expectation,
    pub pairing: Pairing,
    /// Seconds the expectation waits, instead of its class's timeout (a SIP
    /// registration lives for the expiry the registrar granted). The kernel sets a new
    /// expectation's timer from the class policy, so the daemon sets this one with a
    /// refresh right after creating it.
    pub timeout: Option<u32>,
}

/// A piece of the plan's text (see [`Plan::text`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u16,
    len: u16,
}

impl Span {
    /// No text.
    pub const EMPTY: Span = Span { start: 0, len: 0 };

    pub fn len(self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// How a port is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortText {
    /// "40000".
    Decimal,
    /// The port's two bytes as decimal numbers joined by `sep`: "156,64" (FTP PORT, 227).
    Octets { sep: u8 },
}

/// How the helper spells an endpoint whose port the daemon decides (the NAT port
/// search may move it): `before` (the address and what precedes the port, spelled by
/// the helper), the port, then `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spelling {
    pub before: Span,
    pub port: PortText,
    pub after: Span,
}

/// What a payload range becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replacement {
    /// These bytes (a translated address, a host:port).
    Literal(Span),
    /// The endpoint of the plan's expectation `expectation`, with the port it got.
    Endpoint {
        expectation: usize,
        spelling: Spelling,
    },
    /// The decimal length of the payload bytes `body_start..body_end` (ranges of the
    /// original payload) after the other rewrites that start inside them: SIP's
    /// Content-Length, whose body changes when its c= and m= lines do.
    Length { body_start: usize, body_end: usize },
}

/// A payload range to replace: `payload[start..end]` (of the original payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub start: usize,
    pub end: usize,
    pub with: Replacement,
}

/// The text rewrites refer to, a fixed arena filled through [`Plan::text`].
pub type Text = heapless::Vec<u8, PLAN_TEXT_MAX>;

/// What a helper wants done with one packet. The verdict is always accept: helpers never
/// drop traffic they fail to understand (the daemon drops a NATed packet whose rewrite
/// cannot be made, see `daemon/effects.rs`).
#[derive(Debug, Default)]
pub struct Plan {
    /// In order; a [`Pairing::Rtp`] is directly followed by its [`Pairing::Rtcp`].
    pub expectations: heapless::Vec<Expect, MAX_EXPECTATIONS_PER_PACKET>,
    /// Pending expectations to delete, by tuple (the kernel has no delete-by-master).
    /// Done before the expectations are created, so a re-INVITE may delete and create
    /// the same tuple.
    pub deletions: heapless::Vec<Tuple, MAX_DELETIONS_PER_PACKET>,
    pub refusals: heapless::Vec<Refusal, MAX_REFUSALS_PER_PACKET>,
    /// Payload rewrites (only on NATed connections), in payload order, not overlapping.
    pub rewrites: heapless::Vec<Rewrite, MAX_REWRITES_PER_PACKET>,
    /// The bytes the rewrites' spans refer to.
    pub text: Text,
    /// The private data was changed and must be written back to the conntrack.
    pub private_changed: bool,
    /// The payload contained something that looked like a command or reply the helper
    /// acts on but could not be parsed.
    pub parse_error: bool,
    /// A message that needed a NAT rewrite passed unchanged: it began in a TCP segment
    /// already sent, or its rewrites did not fit the plan. Nothing it announced
    /// through the NAT was expected.
    pub unrewritten: bool,
    /// When the daemon cannot make the rewrites (no room, no port for an expectation),
    /// pass the packet as it is and withdraw only its NAT expectations, instead of
    /// dropping it and withdrawing them all (FTP, as nf_nat_ftp: the sender retransmits
    /// the one line). SIP: a message carries more than the announcement, and a dropped
    /// INVITE would only be retransmitted into the same failure.
    pub pass_unrewritable: bool,
    /// Seconds the connection itself is to live from this packet on, instead of its
    /// protocol's idle timeout (SIP's `sip_timeout`: a UDP signalling connection must
    /// outlive the registration whose expectation it holds, and the kernel removes a
    /// connection's expectations with it).
    pub master_timeout: Option<u32>,
}

/// Appends to a [`Text`], failing (without partial text) when it is full.
struct Appender<'a>(&'a mut Text);

impl fmt::Write for Appender<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes())
            .map_err(|_| fmt::Error)
    }
}

impl Plan {
    /// Ask for one expectation; returns its index, or None when the plan is full.
    pub fn expect(&mut self, exp: Expectation) -> Option<usize> {
        let index = self.expectations.len();
        self.expectations
            .push(Expect {
                exp,
                pairing: Pairing::Single,
                timeout: None,
            })
            .ok()?;
        Some(index)
    }

    /// Ask for one expectation that waits `timeout_secs` (not its class's timeout).
    pub fn expect_for(&mut self, exp: Expectation, timeout_secs: u32) -> Option<usize> {
        let index = self.expect(exp)?;
        if let Some(e) = self.expectations.get_mut(index) {
            e.timeout = Some(timeout_secs);
        }
        Some(index)
    }

    /// Ask for an RTP/RTCP pair: `rtcp` must be on the port after `rtp`'s. Returns the
    /// RTP expectation's index (RTCP's is the next), or None when the plan has no room
    /// for both or the ports are not adjacent (then announce them as two singles).
    pub fn expect_pair(&mut self, rtp: Expectation, rtcp: Expectation) -> Option<usize> {
        if rtp.dst_port.checked_add(1) != Some(rtcp.dst_port)
            || self.expectations.len() + PAIR_LEN > self.expectations.capacity()
        {
            return None;
        }
        let index = self.expectations.len();
        for (exp, pairing) in [(rtp, Pairing::Rtp), (rtcp, Pairing::Rtcp)] {
            self.expectations
                .push(Expect {
                    exp,
                    pairing,
                    timeout: None,
                })
                .ok()?;
        }
        Some(index)
    }

    /// Ask for the pending expectation with this tuple to be deleted.
    pub fn delete(&mut self, tuple: Tuple) -> bool {
        self.deletions.push(tuple).is_ok()
    }

    /// Report an announcement the helper deliberately did not act on. Capacity is per
    /// packet; beyond it refusals are lost (the caller need not care).
    pub fn refuse(&mut self, refusal: Refusal) -> bool {
        self.refusals.push(refusal).is_ok()
    }

    /// Append formatted text for a rewrite; None (and nothing appended) when the plan's
    /// text is full.
    pub fn text(&mut self, args: fmt::Arguments<'_>) -> Option<Span> {
        let start = self.text.len();
        if fmt::Write::write_fmt(&mut Appender(&mut self.text), args).is_err() {
            self.text.truncate(start);
            return None;
        }
        Some(Span {
            start: u16::try_from(start).ok()?,
            len: u16::try_from(self.text.len() - start).ok()?,
        })
    }

    /// The bytes of a span of this plan's text (empty for a span it does not hold).
    pub fn text_of(&self, span: Span) -> &[u8] {
        let start = usize::from(span.start);
        self.text.get(start..start + span.len()).unwrap_or_default()
    }

    /// Ask for `payload[start..end]` to be replaced. Rewrites must come in payload order
    /// without overlapping; false (nothing added) for one that does not, or when the plan
    /// is full.
    pub fn rewrite(&mut self, start: usize, end: usize, with: Replacement) -> bool {
        let after_previous = self.rewrites.last().is_none_or(|r| r.end <= start);
        start <= end && after_previous && self.rewrites.push(Rewrite { start, end, with }).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IPPROTO_UDP;

    fn exp(port: u16) -> Expectation {
        Expectation {
            class: 1,
            proto: IPPROTO_UDP,
            src: [192, 0, 2, 1].into(),
            src_port: None,
            dst: [198, 51, 100, 7].into(),
            dst_port: port,
            flags: 0,
            nat: None,
            helper: None,
        }
    }

    #[test]
    fn pairs_are_adjacent_and_atomic() {
        let mut p = Plan::default();
        assert_eq!(p.expect(exp(5060)), Some(0));
        assert_eq!(p.expect_pair(exp(5004), exp(5005)), Some(1));
        assert_eq!(p.expectations[1].pairing, Pairing::Rtp);
        assert_eq!(p.expectations[2].pairing, Pairing::Rtcp);
        assert_eq!(p.expect_pair(exp(5004), exp(5007)), None, "not adjacent");
        assert_eq!(
            p.expect_pair(exp(65535), exp(0)),
            None,
            "no port after 65535"
        );
        while p.expectations.len() < MAX_EXPECTATIONS_PER_PACKET - 1 {
            p.expect(exp(1)).unwrap();
        }
        assert_eq!(
            p.expect_pair(exp(6000), exp(6001)),
            None,
            "room for one only"
        );
        assert_eq!(p.expectations.len(), MAX_EXPECTATIONS_PER_PACKET - 1);
        assert!(p.expect(exp(1)).is_some());
        assert_eq!(p.expect(exp(1)), None);
    }

    #[test]
    fn text_is_all_or_nothing() {
        let mut p = Plan::default();
        let a = p.text(format_args!("{},{}", 203, 0)).unwrap();
        assert_eq!(p.text_of(a), b"203,0");
        let filler = [b'x'; PLAN_TEXT_MAX - 7];
        let s = core::str::from_utf8(&filler).unwrap();
        let b = p.text(format_args!("{s}")).unwrap();
        assert_eq!(b.len(), PLAN_TEXT_MAX - 7);
        assert_eq!(p.text(format_args!("{}", 65535)), None, "3 bytes left");
        assert_eq!(p.text.len(), PLAN_TEXT_MAX - 2, "nothing partial appended");
        assert_eq!(p.text_of(a), b"203,0");
        assert_eq!(p.text_of(Span::EMPTY), b"");
    }

    #[test]
    fn rewrites_keep_payload_order() {
        let mut p = Plan::default();
        let lit = Replacement::Literal(Span::EMPTY);
        assert!(p.rewrite(5, 10, lit));
        assert!(!p.rewrite(8, 12, lit), "overlaps");
        assert!(!p.rewrite(3, 4, lit), "before the previous one");
        assert!(!p.rewrite(12, 11, lit), "reversed");
        assert!(p.rewrite(10, 10, lit), "an insertion right after");
        assert_eq!(p.rewrites.len(), 2);
    }
}
