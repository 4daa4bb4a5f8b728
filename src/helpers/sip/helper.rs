//! The SIP helper (RFC 3261 signalling, RFC 4566 SDP media), modelled on the kernel's
//! nf_conntrack_sip and stricter where that matters (see `media`, `stream`).
//!
//! Per message:
//! - INVITE with SDP: the dialog's earlier media expectations are deleted (the offer
//!   replaces them), then its media are expected (re-INVITE to a new port works).
//! - 1xx/2xx answers to INVITE, UPDATE and PRACK with SDP, and UPDATE, PRACK and ACK
//!   requests with SDP: their media are expected.
//! - BYE and CANCEL: the dialog's media expectations are deleted.
//! - A final answer >= 300 to an INVITE: what that INVITE (its CSeq) created is deleted.
//! - A 2xx answer to REGISTER: one signalling expectation per contact of the phone, from
//!   the registrar, for incoming calls (expires 0: deleted); a non-2xx answer deletes
//!   the phone's earlier one.
//!
//! Media are expected from the other end of the signalling connection to the address
//! and port the SDP names, RTP and RTCP as a pair. A dialog (Call-ID) remembers what it
//! created in the helper's store, so a BYE deletes exactly that; the kernel instead
//! deletes every media expectation of the signalling connection, other calls' too.

use core::net::IpAddr;

use super::media::{self, Binding, Class, MediaTarget, Refused};
use super::message::{Framing, Message, Method, Name, Start, parse_cseq};
use super::nat::{self, Edits, Expected, Frame};
use super::sdp;
use super::stream::{self, DIR_STATE_LEN, DirState, StreamKey};
use crate::helpers::{Helper, Packet, Plan, Policy, Refusal, Store, StoreKey, Transport};
use crate::model::{
    Conntrack, Direction, ExpectNat, Expectation, IPPROTO_TCP, IPPROTO_UDP, expect_flags,
};

/// Well-known SIP port.
pub const PORT: u16 = 5060;
/// Bytes of private data (the kernel's maximum, as FTP: later layouts can grow).
pub const PRIVATE_LEN: usize = 32;
const _: () = assert!(PRIVATE_LEN <= crate::helpers::PRIVATE_DATA_MAX);

/// Private-data layout, version 1:
///
/// | offset | size | field                                                       |
/// |--------|------|-------------------------------------------------------------|
/// | 0      | 1    | layout version (1); 0 = fresh                               |
/// | 1      | 5    | Original direction's stream position (TCP, `stream`)        |
/// | 6      | 5    | Reply direction's stream position                           |
/// | 11     | 1    | registration: 0 none, else 1 + transport (0 UDP, 1 TCP)     |
/// | 12     | 1    | registration: bit 0 the phone's direction (0 Original,      |
/// |        |      | 1 Reply), bit 1 calls from any address (`direct_signalling` |
/// |        |      | off when it was created)                                    |
/// | 13     | 2    | registration: contact port (as the registrar knows it)      |
/// | 15     | 1    | NAT: bit 0 (Original) / bit 1 (Reply) that side's own       |
/// |        |      | endpoint was rewritten (`nat::Sides`)                       |
/// | 16     | 16   | reserved, zero                                              |
const LAYOUT_VERSION: u8 = 1;
const ORIG_STATE: usize = 1;
const REPLY_STATE: usize = ORIG_STATE + DIR_STATE_LEN;
const REGISTRATION: usize = REPLY_STATE + DIR_STATE_LEN;
const NAT_SIDES: usize = REGISTRATION + 4;

/// What the helper keeps in the conntrack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    streams: [DirState; 2],
    /// The phone's registered contact (its expectation, to delete it on a change).
    registration: Option<Registration>,
    sides: nat::Sides,
}

/// A registered contact whose signalling expectation the connection holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Registration {
    /// The phone's direction of the connection.
    phone: Direction,
    transport: media::Transport,
    port: u16,
    /// Incoming calls from any address (`sip_direct_signalling` off), not only from the
    /// registrar's.
    any_source: bool,
}

impl State {
    fn decode(private: &[u8]) -> State {
        if private.first() != Some(&LAYOUT_VERSION) {
            return State::default();
        }
        let dir = |at: usize| DirState::decode(private.get(at..at + DIR_STATE_LEN).unwrap_or(&[]));
        let registration = match private.get(REGISTRATION..REGISTRATION + 4) {
            Some(&[kind @ 1..=2, d, hi, lo]) => Some(Registration {
                phone: if d & 1 == 0 {
                    Direction::Original
                } else {
                    Direction::Reply
                },
                transport: if kind == 1 {
                    media::Transport::Udp
                } else {
                    media::Transport::Tcp
                },
                port: u16::from_be_bytes([hi, lo]),
                any_source: d & 2 != 0,
            }),
            _ => None,
        };
        State {
            streams: [dir(ORIG_STATE), dir(REPLY_STATE)],
            registration,
            sides: nat::Sides(private.get(NAT_SIDES).copied().unwrap_or(0) & 0b11),
        }
    }

    /// Write into `private`; whether it changed.
    fn encode(&self, private: &mut [u8]) -> bool {
        let mut out = [0u8; PRIVATE_LEN];
        out[0] = LAYOUT_VERSION;
        self.streams[0].encode(&mut out[ORIG_STATE..]);
        self.streams[1].encode(&mut out[REPLY_STATE..]);
        if let Some(r) = self.registration {
            out[REGISTRATION] = match r.transport {
                media::Transport::Udp => 1,
                media::Transport::Tcp => 2,
            };
            out[REGISTRATION + 1] = r.phone as u8 | (u8::from(r.any_source) << 1);
            out[REGISTRATION + 2..REGISTRATION + 4].copy_from_slice(&r.port.to_be_bytes());
        }
        out[NAT_SIDES] = self.sides.0;
        let Some(area) = private.get_mut(..PRIVATE_LEN) else {
            return false;
        };
        if *area == out {
            return false;
        }
        area.copy_from_slice(&out);
        true
    }
}

/// One media expectation a dialog created, as the store keeps it: whose address it
/// opens (the announcing direction's sender), its class, ports and the transaction of
/// the message that created it: its CSeq number and the direction of the request
/// (each side numbers its own requests, so the number alone does not name it), and
/// whether it takes media from any address (`sip_direct_media` off when created: the
/// expectation's tuple, which deletes it, depends on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Created {
    dir: Direction,
    class: Class,
    rtp: u16,
    rtcp: Option<u16>,
    cseq: u32,
    requester: Direction,
    any_source: bool,
}

const CREATED_LEN: usize = 9;
/// Media expectations (streams) one dialog remembers.
pub const DIALOG_STREAMS: usize = crate::helpers::STORE_VALUE_MAX / CREATED_LEN;

impl Created {
    fn encode(&self) -> [u8; CREATED_LEN] {
        let mut b = [0u8; CREATED_LEN];
        b[0] = (self.dir as u8)
            | ((self.class as u8) << 1)
            | ((self.requester as u8) << 3)
            | (u8::from(self.any_source) << 4);
        b[1..3].copy_from_slice(&self.rtp.to_be_bytes());
        b[3..5].copy_from_slice(&self.rtcp.unwrap_or(0).to_be_bytes());
        b[5..9].copy_from_slice(&self.cseq.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Created> {
        let b: &[u8; CREATED_LEN] = b.try_into().ok()?;
        let class = match (b[0] >> 1) & 0b11 {
            1 => Class::Audio,
            2 => Class::Video,
            3 => Class::Image,
            _ => return None,
        };
        let rtcp = u16::from_be_bytes([b[3], b[4]]);
        let dir = |bit: u8| {
            if b[0] & bit == 0 {
                Direction::Original
            } else {
                Direction::Reply
            }
        };
        Some(Created {
            dir: dir(1),
            class,
            rtp: u16::from_be_bytes([b[1], b[2]]),
            rtcp: (rtcp != 0).then_some(rtcp),
            cseq: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
            requester: dir(1 << 3),
            any_source: b[0] & (1 << 4) != 0,
        })
    }
}

/// FNV-1a of the Call-ID: the dialog's tag in the store.
fn call_tag(call_id: &[u8]) -> u64 {
    call_id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The SIP helper (stateless: its state is in the conntrack and the store).
pub struct Sip;

/// What handling one message needs besides the message.
struct Ctx<'a> {
    ct: &'a Conntrack,
    dir: Direction,
    options: super::Options,
}

impl Ctx<'_> {
    fn store_key(&self, call_id: &[u8]) -> StoreKey {
        StoreKey {
            conntrack: self.ct.id.unwrap_or(0),
            tag: call_tag(call_id),
        }
    }
}

/// The expectations of one created stream: RTP, and RTCP where there is one. From the
/// other end of the signalling connection (or any address) to the announcer: behind
/// NAT to the address the other side knows it by, translated back to the announcer's
/// real address and port (nat-follow-master).
fn stream_expectations(ct: &Conntrack, c: &Created) -> (Expectation, Option<Expectation>) {
    let real = ct.tuple(c.dir).src;
    let dst = ct.tuple(c.dir.opposite()).dst;
    let src = if c.any_source {
        Expectation::any_source_like(dst)
    } else {
        ct.tuple(c.dir.opposite()).src
    };
    let exp = |port| Expectation {
        class: c.class as u32,
        proto: IPPROTO_UDP,
        src,
        src_port: None,
        dst,
        dst_port: port,
        flags: 0,
        nat: (dst != real).then_some(ExpectNat {
            dir: c.dir.opposite(),
            saved_addr: real,
            saved_port: port,
        }),
        helper: None,
    };
    (exp(c.rtp), c.rtcp.map(exp))
}

fn refuse(plan: &mut Plan, sender: IpAddr, r: &Refused) {
    plan.refuse(Refusal {
        what: r.what,
        announced: r.addr,
        port: r.port,
        sender,
        reason: r.reason,
    });
}

/// Delete every stream of the dialog at `key` for which `which` holds; keep the rest.
fn delete_streams(
    ctx: &Ctx<'_>,
    store: &mut Store,
    key: StoreKey,
    plan: &mut Plan,
    which: impl Fn(&Created) -> bool,
) {
    let Some(value) = store.get(key) else {
        return;
    };
    let mut kept: heapless::Vec<u8, { crate::helpers::STORE_VALUE_MAX }> = heapless::Vec::new();
    for chunk in value.chunks_exact(CREATED_LEN) {
        let Some(c) = Created::decode(chunk) else {
            continue;
        };
        if which(&c) {
            let (rtp, rtcp) = stream_expectations(ctx.ct, &c);
            plan.delete(rtp.tuple());
            if let Some(rtcp) = rtcp {
                plan.delete(rtcp.tuple());
            }
        } else {
            let _ = kept.extend_from_slice(chunk);
        }
    }
    if kept.is_empty() {
        store.remove(key);
    } else {
        let _ = store.insert(key, &kept);
    }
}

/// The transaction a message belongs to: its CSeq number and the direction of its
/// request.
#[derive(Clone, Copy)]
struct Transaction {
    cseq: u32,
    requester: Direction,
}

/// Expect the media of an SDP body and remember them for the dialog. Behind NAT the
/// body's rewrites go to `edits` (`rewritable`: the message is wholly in this packet;
/// if not, media of a translated sender cannot be announced right and are not
/// expected).
#[allow(clippy::too_many_arguments)]
fn expect_media(
    ctx: &Ctx<'_>,
    msg: &Message<'_>,
    tx: Transaction,
    key: StoreKey,
    store: &mut Store,
    plan: &mut Plan,
    frame: &Frame<'_>,
    edits: &mut Edits,
    rewritable: bool,
) {
    let Transaction { cseq, requester } = tx;
    if !is_sdp(msg) {
        return;
    }
    let session = sdp::parse(msg.buf(), msg.body.clone());
    if session.malformed > 0 {
        plan.parse_error = true;
    }
    let (real, public) = frame.sender();
    let translated = real != public;
    let mut targets: heapless::Vec<MediaTarget, { media::MAX_TARGETS }> = heapless::Vec::new();
    let mut refused: heapless::Vec<Refused, { media::MAX_REFUSALS }> = heapless::Vec::new();
    media::media_targets(&session, real, public, &mut targets, &mut refused);
    for r in &refused {
        refuse(plan, real, r);
    }
    if translated && !rewritable {
        // The peer would be told the inside address: nothing to expect.
        if !targets.is_empty() {
            plan.unrewritten = true;
        }
        return;
    }
    let mut expected: heapless::Vec<Expected, { media::MAX_TARGETS }> = heapless::Vec::new();
    let mut dialog: heapless::Vec<u8, { crate::helpers::STORE_VALUE_MAX }> = heapless::Vec::new();
    if let Some(v) = store.get(key) {
        let _ = dialog.extend_from_slice(v);
    }
    for t in &targets {
        let created = Created {
            dir: ctx.dir,
            class: t.class,
            rtp: t.rtp,
            rtcp: t.rtcp,
            cseq,
            requester,
            any_source: !ctx.options.direct_media,
        };
        let (rtp, rtcp) = stream_expectations(ctx.ct, &created);
        let asked = match rtcp {
            Some(rtcp) if rtcp.dst_port == rtp.dst_port.wrapping_add(1) => {
                plan.expect_pair(rtp, rtcp).map(|i| (i, Some(i + 1)))
            }
            Some(rtcp) => plan.expect(rtp).and_then(|i| match plan.expect(rtcp) {
                Some(j) => Some((i, Some(j))),
                None => {
                    // No room for its RTCP: the stream is given up whole.
                    plan.expectations.pop();
                    None
                }
            }),
            None => plan.expect(rtp).map(|i| (i, None)),
        };
        let Some((rtp_index, rtcp_index)) = asked else {
            break;
        };
        let _ = expected.push(Expected {
            media: t.media,
            rtp: rtp_index,
            rtcp: rtcp_index,
        });
        let already = dialog
            .chunks_exact(CREATED_LEN)
            .filter_map(Created::decode)
            .any(|c| {
                c.dir == created.dir
                    && c.rtp == created.rtp
                    && c.rtcp == created.rtcp
                    && c.any_source == created.any_source
            });
        if !already && dialog.len() / CREATED_LEN < DIALOG_STREAMS {
            let _ = dialog.extend_from_slice(&created.encode());
        }
    }
    if !dialog.is_empty() {
        let _ = store.insert(key, &dialog);
    }
    if translated {
        nat::sdp(frame, msg, &session, &expected, plan, edits);
    }
}

/// Content-Type application/sdp (or none, with a body: the kernel looks at any body).
fn is_sdp(msg: &Message<'_>) -> bool {
    if msg.body.is_empty() {
        return false;
    }
    match msg.header(Name::ContentType) {
        None => true,
        Some(h) => {
            let v = super::message::trim(msg.bytes(&h.value));
            v.get(..15)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"application/sdp"))
        }
    }
}

/// The signalling expectation of a registered contact: from the registrar (or any
/// address) to the phone. Behind NAT the contact is the phone's translated address
/// with the port the registrar was given; the call is translated back to the phone's
/// real address, on its signalling port when the contact named that (the Contact
/// rewrite maps it), else on the same port.
fn registration_expectation(ct: &Conntrack, r: &Registration) -> Expectation {
    let phone = ct.tuple(r.phone);
    let seen = ct.tuple(r.phone.opposite());
    let dst = seen.dst;
    let saved_port = if r.port == seen.dst_port {
        phone.src_port
    } else {
        r.port
    };
    Expectation {
        class: Class::Signalling as u32,
        proto: match r.transport {
            media::Transport::Udp => IPPROTO_UDP,
            media::Transport::Tcp => IPPROTO_TCP,
        },
        src: if r.any_source {
            Expectation::any_source_like(dst)
        } else {
            seen.src
        },
        src_port: None,
        dst,
        dst_port: r.port,
        flags: expect_flags::PERMANENT,
        nat: (dst != phone.src).then_some(ExpectNat {
            dir: r.phone.opposite(),
            saved_addr: phone.src,
            saved_port,
        }),
        // The call it admits is SIP too, and its INVITE carries the SDP.
        helper: Some(crate::helpers::registry::SIP.name),
    }
}

fn handle_register_answer(
    ctx: &Ctx<'_>,
    msg: &Message<'_>,
    code: u16,
    st: &mut State,
    plan: &mut Plan,
) {
    // The answer goes to the phone: the phone is the other direction's sender.
    let phone_dir = ctx.dir.opposite();
    if let Some(r) = st.registration.take() {
        plan.delete(registration_expectation(ctx.ct, &r).tuple());
    }
    if !(200..300).contains(&code) {
        return;
    }
    let mut bindings: heapless::Vec<Binding, { media::MAX_BINDINGS }> = heapless::Vec::new();
    let mut refused: heapless::Vec<Refused, { media::MAX_REFUSALS }> = heapless::Vec::new();
    let signalling = if ctx.ct.orig.proto == IPPROTO_TCP {
        media::Transport::Tcp
    } else {
        media::Transport::Udp
    };
    // The registrar knows the phone by its translated address behind NAT.
    media::register_bindings(
        msg,
        ctx.ct.tuple(ctx.dir).dst,
        signalling,
        &mut bindings,
        &mut refused,
    );
    for r in &refused {
        refuse(plan, ctx.ct.tuple(phone_dir).src, r);
    }
    // One registration per signalling connection, as the kernel's signalling class
    // allows one expectation: the first binding that is not a removal.
    if let Some(b) = bindings.iter().find(|b| b.expires > 0) {
        let r = Registration {
            phone: phone_dir,
            transport: b.transport,
            port: b.port,
            any_source: !ctx.options.direct_signalling,
        };
        if plan
            .expect_for(registration_expectation(ctx.ct, &r), b.expires)
            .is_some()
        {
            st.registration = Some(r);
        }
    }
}

/// Handle one message. `base`: where it starts in the packet's payload, None when it
/// began in an earlier segment (a TCP message reassembled here, already partly sent:
/// it cannot be rewritten for NAT).
fn handle(
    ctx: &Ctx<'_>,
    msg: &Message<'_>,
    base: Option<usize>,
    st: &mut State,
    store: &mut Store,
    plan: &mut Plan,
) {
    let Some(cseq) = msg
        .header(Name::CSeq)
        .and_then(|h| parse_cseq(msg.bytes(&h.value)))
    else {
        plan.parse_error = true;
        return;
    };
    let call_id = msg
        .header(Name::CallId)
        .map(|h| msg.bytes(&h.value))
        .unwrap_or(&[]);
    let key = ctx.store_key(super::message::trim(call_id));
    let nated = ctx.ct.is_nated();
    let frame = Frame {
        ct: ctx.ct,
        dir: ctx.dir,
        base: base.unwrap_or(0),
    };
    let mut edits = Edits::default();
    let sides = st.sides;
    let first_expectation = plan.expectations.len();
    if nated {
        nat::headers(&frame, msg, &mut st.sides, plan, &mut edits);
    }
    let rewritable = base.is_some();
    let media = |tx, store: &mut Store, plan: &mut Plan, edits: &mut Edits| {
        expect_media(ctx, msg, tx, key, store, plan, &frame, edits, rewritable);
    };
    let own = Transaction {
        cseq: cseq.0,
        requester: ctx.dir,
    };
    let answer = Transaction {
        cseq: cseq.0,
        requester: ctx.dir.opposite(),
    };
    match &msg.start {
        Start::Request { method, .. } => match method {
            Method::Invite => {
                // A new offer replaces the media of the dialog's earlier transactions;
                // a retransmission (same request direction and CSeq) keeps its own
                // offer's and answer's: the answer may already have passed.
                delete_streams(ctx, store, key, plan, |c| {
                    !(c.requester == ctx.dir && c.cseq == cseq.0)
                });
                media(own, store, plan, &mut edits);
            }
            Method::Update | Method::Prack | Method::Ack => media(own, store, plan, &mut edits),
            Method::Bye | Method::Cancel => delete_streams(ctx, store, key, plan, |_| true),
            _ => {}
        },
        Start::Response { code } => match cseq.1 {
            Method::Register => handle_register_answer(ctx, msg, *code, st, plan),
            Method::Invite if *code >= 300 => {
                delete_streams(ctx, store, key, plan, |c| {
                    c.requester == ctx.dir.opposite() && c.cseq == cseq.0
                });
            }
            Method::Invite | Method::Update | Method::Prack if *code >= 101 => {
                media(answer, store, plan, &mut edits);
            }
            _ => {}
        },
    }
    if !nated || (edits.is_empty() && !edits.overflow) {
        return;
    }
    if !(rewritable && edits.commit(plan)) {
        // Passed as it is (counted): nothing it announces through the NAT is opened,
        // and the connection's sides stay as they were.
        plan.unrewritten = true;
        st.sides = sides;
        let mut i = first_expectation;
        while i < plan.expectations.len() {
            if plan
                .expectations
                .get(i)
                .is_some_and(|e| e.exp.nat.is_some())
            {
                plan.expectations.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

impl Helper for Sip {
    /// A registration's incoming call arrives as an expected connection and its INVITE
    /// carries the SDP: SIP is analysed there (a TCP stream throughout: its positions
    /// need every segment). A media (RTP/RTCP) connection that inherited the helper is
    /// not SIP and is passed at once.
    fn helps_expected(&self, pkt: &Packet<'_>) -> bool {
        match pkt.transport {
            Transport::Tcp { .. } => true,
            Transport::Udp => stream::starts_like_sip(pkt.payload),
        }
    }

    fn analyse(
        &self,
        pkt: &Packet<'_>,
        ct: &Conntrack,
        private: &mut [u8],
        store: &mut Store,
        policy: Policy,
    ) -> Plan {
        let mut plan = Plan {
            pass_unrewritable: true,
            ..Plan::default()
        };
        let mut st = State::decode(private);
        let ctx = Ctx {
            ct,
            dir: pkt.dir,
            options: policy.sip,
        };
        match pkt.transport {
            Transport::Udp => {
                // As the kernel's nf_conntrack_sip, on every UDP packet it sees: the
                // connection outlives the idle timeout of UDP.
                plan.master_timeout = Some(policy.sip.timeout);
                match Message::parse(pkt.payload, Framing::Datagram) {
                    Ok(msg) => handle(&ctx, &msg, Some(0), &mut st, store, &mut plan),
                    Err(_) => plan.parse_error = stream::starts_like_sip(pkt.payload),
                }
            }
            Transport::Tcp { seq, .. } => {
                // The pool is taken out while the messages are handled with the store.
                if let Some(mut pool) = store.streams.take() {
                    let key = StreamKey {
                        conntrack: ct.id.unwrap_or(0),
                        reply: pkt.dir == Direction::Reply,
                    };
                    let dir_state = &mut st.streams[pkt.dir.index()];
                    // A segment that begins with bytes already consumed (a partial
                    // retransmission) is fed from its new bytes: offsets in what `feed`
                    // hands over start `skip` bytes into the payload.
                    let skip = dir_state.retransmitted(seq, pkt.payload.len());
                    let mut handled = State {
                        streams: [DirState::default(); 2],
                        ..st
                    };
                    let outcome = pool.feed(dir_state, key, seq, pkt.payload, |data, from| {
                        stream::complete_messages(data, |m, at| {
                            let base = at.checked_sub(from).map(|b| b + skip);
                            handle(&ctx, m, base, &mut handled, store, &mut plan);
                        })
                    });
                    st.registration = handled.registration;
                    st.sides = handled.sides;
                    if outcome == stream::Outcome::Lost {
                        plan.parse_error = true;
                    }
                    store.streams = Some(pool);
                }
            }
        }
        plan.private_changed = st.encode(private);
        plan
    }
}

#[cfg(test)]
mod nat_tests;
#[cfg(test)]
mod tests;
