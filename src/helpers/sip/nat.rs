//! SIP through NAT (issue #14): which parts of a message on a translated connection are
//! rewritten, and into what (pure; the daemon applies the plan's rewrites, see `nat`).
//!
//! A header endpoint (Request-URI, top Via sent-by, Contact, From, To) is rewritten only
//! where its text names one of the connection's own endpoints, as the kernel's
//! nf_nat_sip maps them:
//! - *forward*: the sender's real endpoint (`tuple(dir).src`, an inside phone's
//!   192.0.2.2:5060) becomes the one the other side sees (`tuple(!dir).dst`, the
//!   router's outside address and mapped port);
//! - *back*: the endpoint the other side addressed (`tuple(dir).dst`) becomes the real
//!   one (`tuple(!dir).src`) — only once this side's peer has had its own endpoint
//!   rewritten forward in a request of its own (its Via, or the Contact it registered):
//!   then the responses to it and the requests to that contact are mapped back. The
//!   kernel maps back unconditionally, so a phone that already advertises its public
//!   endpoint (learned by STUN) gets responses whose Via names an inside address it
//!   never sent, and drops them (RFC 3261 §18.1.2). A side rewritten only in its
//!   responses (a port-forwarded PBX answering) keeps its public address in the
//!   requests it gets: so an outside phone's INVITE sent again after the PBX answered
//!   leaves the router as the first copy did.
//!
//! Anything else (another host's address, a host name, an address a phone learned by
//! STUN) is left as it is, so a message that needs no change leaves byte-identical.
//!
//! SDP: o= and c= addresses equal to the sender's real address become the translated
//! one; m= (and a=rtcp) ports become the ports the daemon got for the media
//! expectations on the translated address (it searches another pair when the
//! announced one is taken by another inside host); Content-Length then states the
//! body's new length.

use core::net::IpAddr;

use super::message::{Message, Name, Start, range_of, trim};
use super::sdp::Session;
use super::uri::{HostPort, Scheme, param, parse_address, parse_uri, parse_via};
use crate::helpers::{
    MAX_REWRITES_PER_PACKET, Plan, PortText, Replacement, Rewrite, Span, Spelling,
};
use crate::model::{Conntrack, Direction};

/// Default port of a SIP URI or Via without one.
const SIP_PORT: u16 = 5060;
const SIPS_PORT: u16 = 5061;

/// Which sides of a connection have had their own endpoint rewritten forward (bit per
/// direction, kept in the private data): only then are endpoints in messages to
/// them mapped back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sides(pub u8);

impl Sides {
    fn bit(dir: Direction) -> u8 {
        1 << dir.index()
    }

    pub fn rewritten(self, dir: Direction) -> bool {
        self.0 & Self::bit(dir) != 0
    }

    fn mark(&mut self, dir: Direction) {
        self.0 |= Self::bit(dir);
    }
}

/// The rewrites of one message, collected in any order, handed to the plan sorted.
#[derive(Default)]
pub struct Edits {
    list: heapless::Vec<Rewrite, MAX_REWRITES_PER_PACKET>,
    /// A rewrite did not fit (the list or the plan's text): the message cannot be
    /// rewritten whole.
    pub overflow: bool,
    /// Rewrites inside the body (Content-Length must follow).
    body: bool,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn push(&mut self, start: usize, end: usize, with: Replacement) {
        if self.list.push(Rewrite { start, end, with }).is_err() {
            self.overflow = true;
        }
    }

    fn literal(&mut self, plan: &mut Plan, range: (usize, usize), text: core::fmt::Arguments<'_>) {
        match plan.text(text) {
            Some(span) => self.push(range.0, range.1, Replacement::Literal(span)),
            None => self.overflow = true,
        }
    }

    /// Move the rewrites into the plan, in payload order. All or nothing: false (and
    /// the plan's rewrites as they were) when they do not fit or overlap.
    pub fn commit(mut self, plan: &mut Plan) -> bool {
        if self.overflow {
            return false;
        }
        self.list.sort_unstable_by_key(|r| r.start);
        let before = plan.rewrites.len();
        for r in &self.list {
            if !plan.rewrite(r.start, r.end, r.with) {
                plan.rewrites.truncate(before);
                return false;
            }
        }
        true
    }
}

/// Where one message's text sits in the packet, and the connection it travels on.
pub struct Frame<'a> {
    pub ct: &'a Conntrack,
    pub dir: Direction,
    /// Offset of the message's first byte in the packet's payload.
    pub base: usize,
}

impl Frame<'_> {
    /// The sender's real address, and the address the other side knows it by.
    pub fn sender(&self) -> (IpAddr, IpAddr) {
        (
            self.ct.tuple(self.dir).src,
            self.ct.tuple(self.dir.opposite()).dst,
        )
    }

    /// Where an endpoint named in this message goes: Some((address, port, forward)).
    fn map(&self, sides: Sides, addr: IpAddr, port: u16) -> Option<(IpAddr, u16, bool)> {
        let here = self.ct.tuple(self.dir);
        let there = self.ct.tuple(self.dir.opposite());
        let mapped = if addr == here.src && port == here.src_port {
            (there.dst, there.dst_port, true)
        } else if sides.rewritten(self.dir.opposite()) && addr == here.dst && port == here.dst_port
        {
            (there.src, there.src_port, false)
        } else {
            return None;
        };
        (mapped.0 != addr || mapped.1 != port).then_some(mapped)
    }

    fn at(&self, r: core::ops::Range<usize>) -> (usize, usize) {
        (self.base + r.start, self.base + r.end)
    }
}

/// Rewrite `hp` (an endpoint in a header, `default_port` when it names none) if it is
/// one of the connection's; returns Some(forward) when it was.
fn host_port(
    f: &Frame<'_>,
    sides: Sides,
    hp: &HostPort,
    default_port: u16,
    plan: &mut Plan,
    edits: &mut Edits,
) -> Option<bool> {
    let addr = hp.addr?;
    let (new_addr, new_port, forward) = f.map(sides, addr, hp.port.unwrap_or(default_port))?;
    let end = hp.port_text.as_ref().map_or(hp.host.end, |p| p.end);
    let range = f.at(hp.host.start..end);
    // Written as the kernel writes it, but without a port where none was written and
    // the default still applies.
    match (new_addr, hp.port.is_none() && new_port == default_port) {
        (IpAddr::V4(a), true) => edits.literal(plan, range, format_args!("{a}")),
        (IpAddr::V4(a), false) => edits.literal(plan, range, format_args!("{a}:{new_port}")),
        (IpAddr::V6(a), true) => edits.literal(plan, range, format_args!("[{a}]")),
        (IpAddr::V6(a), false) => edits.literal(plan, range, format_args!("[{a}]:{new_port}")),
    }
    Some(forward)
}

fn default_port(scheme: Scheme) -> u16 {
    match scheme {
        Scheme::Sips => SIPS_PORT,
        Scheme::Sip | Scheme::Other => SIP_PORT,
    }
}

/// The header rewrites of `msg`: Request-URI, top Via (with received= and rport= of a
/// response), every Contact, From and To. Marks the sender's side in `sides` when its
/// own endpoint was rewritten forward in the Via or a Contact of a request.
pub fn headers(
    f: &Frame<'_>,
    msg: &Message<'_>,
    sides: &mut Sides,
    plan: &mut Plan,
    edits: &mut Edits,
) {
    let buf = msg.buf();
    let before = *sides;
    let mut own = false;
    if let Start::Request { uri, .. } = &msg.start
        && let Some(u) = parse_uri(buf, uri.clone())
    {
        host_port(f, before, &u.host, default_port(u.scheme), plan, edits);
    }
    if let Some(via) = msg.values(Name::Via).next().and_then(|v| parse_via(buf, v))
        && let Some(addr) = via.sent_by.addr
    {
        // A request's Via names its sender (mapped forward); a response's, the
        // requester it returns to (mapped back).
        let request = matches!(msg.start, Start::Request { .. });
        let port = via.sent_by.port.unwrap_or(SIP_PORT);
        if f.map(before, addr, port)
            .is_some_and(|(_, _, forward)| forward == request)
        {
            own |= host_port(f, before, &via.sent_by, SIP_PORT, plan, edits) == Some(true);
            if !request {
                via_params(f, buf, via.params.clone(), plan, edits);
            }
        }
    }
    for name in [Name::Contact, Name::From, Name::To] {
        for value in msg.values(name) {
            let Some(u) = parse_address(buf, value).and_then(|a| parse_uri(buf, a.uri)) else {
                continue;
            };
            let forward = host_port(f, before, &u.host, default_port(u.scheme), plan, edits);
            own |= name == Name::Contact && forward == Some(true);
            if name != Name::Contact {
                break;
            }
        }
    }
    if own && matches!(msg.start, Start::Request { .. }) {
        sides.mark(f.dir);
    }
}

/// received= and rport= of a response's top Via that name where the request came from
/// after NAT: they go back to the requester's real address and port.
fn via_params(
    f: &Frame<'_>,
    buf: &[u8],
    params: core::ops::Range<usize>,
    plan: &mut Plan,
    edits: &mut Edits,
) {
    let here = f.ct.tuple(f.dir);
    let there = f.ct.tuple(f.dir.opposite());
    if let Some(r) = param(buf, params.clone(), b"received")
        && let Some(addr) = buf
            .get(r.clone())
            .and_then(|t| core::str::from_utf8(trim(t)).ok())
            .and_then(|t| {
                t.trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .ok()
            })
        && addr == here.dst
        && addr != there.src
    {
        edits.literal(plan, f.at(r), format_args!("{}", there.src));
    }
    if let Some(r) = param(buf, params, b"rport")
        && let Some(port) = buf
            .get(r.clone())
            .and_then(|t| core::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<u16>().ok())
        && port == here.dst_port
        && port != there.src_port
    {
        edits.literal(plan, f.at(r), format_args!("{}", there.src_port));
    }
}

/// The expectations a media stream got: indices into the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Index of the m= line in the session.
    pub media: usize,
    pub rtp: usize,
    /// The RTCP expectation, where a=rtcp names its port.
    pub rtcp: Option<usize>,
}

/// The SDP rewrites of a message whose sender is translated: o= and c= addresses that
/// name the sender, the m= (and a=rtcp) ports of the streams in `expected`, and then
/// the Content-Length.
pub fn sdp(
    f: &Frame<'_>,
    msg: &Message<'_>,
    session: &Session,
    expected: &[Expected],
    plan: &mut Plan,
    edits: &mut Edits,
) {
    let (real, public) = f.sender();
    let address = |edits: &mut Edits, plan: &mut Plan, a: &super::sdp::Address| {
        if a.addr == real {
            edits.literal(plan, f.at(a.text.clone()), format_args!("{public}"));
            edits.body = true;
        }
    };
    for a in session.origin.iter().chain(session.connection.iter()) {
        address(edits, plan, a);
    }
    let port = |expectation| Replacement::Endpoint {
        expectation,
        spelling: Spelling {
            before: Span::EMPTY,
            port: PortText::Decimal,
            after: Span::EMPTY,
        },
    };
    for (index, m) in session.media.iter().enumerate() {
        if let Some(e) = expected.iter().find(|e| e.media == index) {
            let (start, end) = f.at(m.port_text.clone());
            edits.push(start, end, port(e.rtp));
            if let (Some(rtcp), Some((_, text))) = (e.rtcp, &m.rtcp) {
                let (start, end) = f.at(text.clone());
                edits.push(start, end, port(rtcp));
            }
            edits.body = true;
        }
        if let Some(c) = &m.connection {
            address(edits, plan, c);
        }
    }
    if !edits.body {
        return;
    }
    // Every Content-Length (repeated ones must agree, or the message would not have
    // parsed; left stating the old length, it would no longer parse).
    let (body_start, body_end) = f.at(msg.body.clone());
    for h in msg.headers().flatten() {
        if h.name != Name::ContentLength {
            continue;
        }
        let digits = range_of(msg.buf(), trim(msg.bytes(&h.value)));
        let (start, end) = f.at(digits);
        edits.push(
            start,
            end,
            Replacement::Length {
                body_start,
                body_end,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_per_direction() {
        let mut s = Sides::default();
        assert!(!s.rewritten(Direction::Original));
        s.mark(Direction::Reply);
        assert!(s.rewritten(Direction::Reply) && !s.rewritten(Direction::Original));
    }
}
