//! FTP helper (RFC 959 PORT/227, RFC 2428 EPRT/229), modelled on the kernel's
//! net/netfilter/nf_conntrack_ftp.c.
//!
//! What carries over from the kernel, and where we deliberately differ:
//! - Only the first line of a segment is parsed, and only if the segment starts at a line
//!   start: per direction the private data keeps the two most recent TCP sequence numbers
//!   that followed a '\n' (the kernel's `seq_aft_nl`), and a segment whose sequence number
//!   is not one of them is not parsed at all. Like the kernel, one announcement per
//!   segment. Later lines of a segment are never parsed: a server that echoes a
//!   client-chosen line feed ("550 foo\n227 (...)") would otherwise let the client forge a
//!   227 and open a port of a port-forwarded server (issue #11). The cost is the kernel's
//!   too: a PORT pipelined behind another command in one segment is not seen.
//! - In the reply direction we also follow multi-line replies ("ddd-" ... "ddd "), which
//!   the kernel does not: a body line that happens to start a segment (a file name or
//!   echoed text cut at the MSS, a retransmission) is not a reply and is not parsed. The
//!   closing "ddd " line is a reply line and is parsed. See [`State`] for what is kept.
//! - In the reply direction a line start is recorded only after CRLF, not after a bare LF
//!   (which an echoing server can be made to send, and an attacker controlling the
//!   segmentation can place at a segment's end).
//! - Commands are matched case-insensitively ("port" works, as with strncasecmp).
//! - The announced address must be the sender's own address in its direction's tuple
//!   (the kernel's default `loose=0`): no expectations towards third parties.
//! - Announced ports below 1024 are refused unless the helper's `allow_low_ports` policy
//!   says otherwise, with or without NAT: an expectation to port 22 of a forwarded server,
//!   or to a client's own port 23, is never a data connection (the kernel accepts both).
//! - Arguments are validated strictly (each PORT/227 number <= 255, ports 1..=65535,
//!   exactly six numbers); the kernel only gained the <= 255 check in 2026.
//! - The kernel drops a packet whose command it recognises but cannot parse ("partial
//!   match"), to force a retransmission; a helper here never drops, it reports
//!   `parse_error` and still records the line start so later commands are seen.

mod parse;
mod state;

use core::net::IpAddr;

use crate::helpers::{
    Helper, Packet, Plan, Policy, PortText, Refusal, RefusalReason, Replacement, Span, Spelling,
    Store, Transport,
};
use crate::model::{Conntrack, Direction, ExpectNat, Expectation, IPPROTO_TCP, status};
use crate::wire::text;

use parse::{Announce, parse_first_line};
use parse::{EPRT_IPV4, EPRT_IPV6};
pub use state::State;
use state::{Cursor, Line, seq_before, track};

/// Well-known FTP control port.
pub const PORT: u16 = 21;

/// Announced ports below this are refused (see [`Policy::allow_low_ports`]).
pub const LOW_PORT_LIMIT: u16 = 1024;

/// Bytes of private data registered with the kernel. Fixed at 32 (the maximum) so later
/// layouts can grow without a registration change, which the kernel refuses with EBUSY
/// while conntracks use the helper.
pub const PRIVATE_LEN: usize = 32;
const _: () = assert!(PRIVATE_LEN <= crate::helpers::PRIVATE_DATA_MAX);

/// Layout version stored in byte 0. 0 means "never written" (a fresh conntrack).
pub const LAYOUT_VERSION: u8 = 1;

/// How many line-start sequence numbers are kept per direction (the kernel's
/// NUM_SEQ_TO_REMEMBER). Two cover a retransmission of the last line alongside the next.
pub const SEQS_PER_DIR: usize = 2;

/// A connection's directions (original, reply), indexed by `Direction::index`.
pub(super) const DIRECTIONS: usize = 2;

/// Digits of an FTP reply code (RFC 959: 100..=999).
pub(super) const CODE_DIGITS: u8 = 3;

/// The private data's cursor head spells a line's first digits as 1 + HEAD_SCALE * n +
/// value (see the layout below): one more than the largest `CODE_DIGITS`-digit value.
pub(super) const HEAD_SCALE: u16 = 1000;

/// Numbers in PORT's and 227's "h1,h2,h3,h4,p1,p2".
pub(super) const HOST_PORT_NUMBERS: usize = 6;

/// Numbers in an IPv4 address of EPRT.
pub(super) const IPV4_OCTETS: usize = 4;

/// 229's delimiters before the port: "(|||port|)".
pub(super) const EPSV_LEADING_DELIMITERS: usize = 3;

/// Bytes of a sequence number and of a reply code in the private data.
pub(super) const SEQ_BYTES: usize = core::mem::size_of::<u32>();
pub(super) const CODE_BYTES: usize = core::mem::size_of::<u16>();

/// The FTP helper. Stateless itself: all per-connection state is the private data.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ftp;

impl Ftp {
    pub const fn new() -> Ftp {
        Ftp
    }
}

impl Helper for Ftp {
    /// FTP keeps everything in the private data; `store` is not used.
    fn analyse(
        &self,
        pkt: &Packet<'_>,
        ct: &Conntrack,
        private: &mut [u8],
        _store: &mut Store,
        policy: Policy,
    ) -> Plan {
        let mut plan = Plan::default();
        let Transport::Tcp { seq, .. } = pkt.transport else {
            return plan;
        };
        // The kernel helper runs only on ESTABLISHED / ESTABLISHED_REPLY packets: an
        // Original-direction packet before the reply direction was seen (SYN, TFO data) is
        // left alone, without touching the line tracking.
        if pkt.dir == Direction::Original && ct.status & status::SEEN_REPLY == 0 {
            return plan;
        }
        let payload = pkt.payload;
        let Some(&last) = payload.last() else {
            return plan;
        };
        let mut st = State::decode(private);
        let dir = pkt.dir;

        // A fresh connection has no recorded line start, so the first data segment in each
        // direction is never parsed: that is the kernel's behaviour (find_nl_seq fails and
        // only SEQ_PICKUP, set for conntracks injected from user space, overrides it). It
        // costs nothing in a real session, where the first segments are the 220 greeting
        // and USER/AUTH, and it means data whose stream position we cannot vouch for
        // (we never saw the start of the stream) is never trusted. Learning the ISN from the
        // SYN would lift this, but the SYN is not guaranteed to reach a user-space helper.
        let (at_line_start, start) = st.position(dir, seq);
        if at_line_start && first_line_is_a_reply(start, payload) {
            parse_first_line(dir, payload, ct, policy, &mut plan);
        }
        // Wraps with the sequence space; a payload never exceeds 64 KiB.
        let end = seq.wrapping_add(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        let after = match dir {
            Direction::Original => Line::start(0),
            Direction::Reply => track(start, payload),
        };
        // Reply lines end in CRLF (RFC 959's Telnet end-of-line). A reply segment that
        // ends in a bare LF records no line start: an echoing server can be made to send
        // one ("550 foo\n"), and a client that controls segmentation (a tiny MSS) can
        // have the reply cut right after it, so that a forged "227 ..." would start the
        // next segment at a recorded line start. The kernel records after any LF.
        // Clients may end commands with a bare LF; they only announce their own endpoint.
        let line_ended = match dir {
            Direction::Original => last == b'\n',
            Direction::Reply => payload.ends_with(b"\r\n"),
        };
        if line_ended {
            st.record(dir, end, after.code());
        }
        if dir == Direction::Reply && st.cursor.is_none_or(|c| !seq_before(end, c.seq)) {
            st.cursor = Some(Cursor {
                seq: end,
                line: after,
            });
        }
        plan.private_changed = st.encode(private);
        plan
    }
}

/// Is the first line of a segment that starts at a line start with multi-line state
/// `start` a line we may parse: not the body of a multi-line reply (its closing line is
/// a reply line)? Always true in the Original direction, where the state is 0.
fn first_line_is_a_reply(start: Line, payload: &[u8]) -> bool {
    let code = start.code();
    if code == 0 {
        return true;
    }
    let first = match text::find_lf(payload) {
        Some(lf) => start.feed_all(payload.get(..lf).unwrap_or(&[])).end(),
        None => match start.feed_all(payload) {
            Line::Rest { next } => next,
            Line::Head { .. } => code,
        },
    };
    first == 0
}

/// How an announcement spells its endpoint, so that a NAT rewrite spells the translated
/// one the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointText {
    /// "h1,h2,h3,h4,p1,p2" (PORT and 227).
    Commas,
    /// `<d>1<d>a.b.c.d<d>port<d>` or `<d>2<d>ipv6<d>port<d>` (EPRT), with the sender's
    /// delimiter.
    Eprt { delim: u8 },
    /// The port alone, in decimal (229).
    Port,
}

impl EndpointText {
    /// The plan's spelling of `addr` with the port the daemon decides (the address goes
    /// into the plan's text). None when `addr` cannot be written this way (an IPv6
    /// address in PORT/227) or the plan's text is full.
    pub fn spelling(self, addr: IpAddr, plan: &mut Plan) -> Option<Spelling> {
        Some(match (self, addr) {
            (EndpointText::Commas, IpAddr::V4(a)) => {
                let [a, b, c, d] = a.octets();
                Spelling {
                    before: plan.text(format_args!("{a},{b},{c},{d},"))?,
                    port: PortText::Octets { sep: b',' },
                    after: Span::EMPTY,
                }
            }
            (EndpointText::Commas, IpAddr::V6(_)) => return None,
            (EndpointText::Eprt { delim }, addr) => {
                let d = char::from(delim);
                let af = char::from(if addr.is_ipv4() { EPRT_IPV4 } else { EPRT_IPV6 });
                Spelling {
                    before: plan.text(format_args!("{d}{af}{d}{addr}{d}"))?,
                    port: PortText::Decimal,
                    after: plan.text(format_args!("{d}"))?,
                }
            }
            (EndpointText::Port, _) => Spelling {
                before: Span::EMPTY,
                port: PortText::Decimal,
                after: Span::EMPTY,
            },
        })
    }
}

/// Turn a parsed announcement into an expectation or a refusal, and on a NATed
/// connection into a rewrite of the announcement too.
///
/// A port below [`LOW_PORT_LIMIT`] is refused unless `policy.allow_low_ports`: FTP
/// data ports are not privileged ports. An expectation to port 22 of a forwarded
/// server is a pinhole for whoever made the server announce it, and one to a client's
/// own port 23 is a pinhole for whoever steers the server's side (or made the client
/// send the line); the kernel's helper opens both. Both directions, NAT or not.
///
/// As in the kernel, the data connection is expected from the peer (any source port) to
/// where this direction's packets appear to come from after NAT: `ct.tuple(!dir).dst`.
/// Without NAT that is the announced address itself. With NAT the expectation also
/// carries the real endpoint (the announced address and port) so the kernel translates
/// the data connection back to it, and the announcement is rewritten to name the
/// translated address, with a port the daemon confirms free on it.
fn announce(
    dir: Direction,
    payload: &[u8],
    what: &'static str,
    ann: Announce<'_>,
    ct: &Conntrack,
    policy: Policy,
    plan: &mut Plan,
) {
    let sender = ct.tuple(dir).src;
    let addr = ann.addr.unwrap_or(sender);
    let port = ann.port;
    let reason = if addr != sender {
        // Includes an EPRT of the other family: it cannot be the sender's address.
        Some(RefusalReason::ThirdPartyAddress)
    } else if port == 0 {
        Some(RefusalReason::BadPort)
    } else if port < LOW_PORT_LIMIT && !policy.allow_low_ports {
        Some(RefusalReason::LowPort)
    } else {
        None
    };
    if let Some(reason) = reason {
        // Capacity is per packet; beyond it refusals are only counted as lost.
        let _ = plan.refuse(Refusal {
            what,
            announced: addr,
            port,
            sender,
            reason,
        });
        return;
    }
    let towards = ct.tuple(dir.opposite());
    let nated = ct.is_nated();
    let exp = Expectation {
        class: crate::helpers::registry::FTP_DATA,
        proto: IPPROTO_TCP,
        src: towards.src,
        src_port: None,
        dst: towards.dst,
        dst_port: port,
        flags: 0,
        nat: nated.then_some(ExpectNat {
            dir: dir.opposite(),
            saved_addr: addr,
            saved_port: port,
        }),
        helper: None,
    };
    let Some(index) = plan.expect(exp) else {
        return;
    };
    if !nated {
        return;
    }
    let Some(range) = text::range_within(payload, ann.text) else {
        return;
    };
    let rewritten = ann
        .spelling
        .spelling(towards.dst, plan)
        .is_some_and(|spelling| {
            plan.rewrite(
                range.start,
                range.end,
                Replacement::Endpoint {
                    expectation: index,
                    spelling,
                },
            )
        });
    if !rewritten {
        // An expectation the peer will never hear of would only hold a pinhole open.
        plan.expectations.pop();
    }
}

#[cfg(test)]
mod tests;
