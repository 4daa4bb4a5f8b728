use super::*;
use crate::helpers::Pairing;
use crate::model::{Tuple, status};

const PHONE: &str = "192.0.2.2";
const PBX: &str = "198.51.100.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A UDP (or TCP) signalling connection phone:5060 -> pbx:5060.
fn conntrack(proto: u8) -> Conntrack {
    let orig = Tuple {
        src: ip(PHONE),
        dst: ip(PBX),
        proto,
        src_port: 5060,
        dst_port: 5060,
    };
    Conntrack {
        orig,
        reply: orig.reversed(),
        status: status::CONFIRMED | status::SEEN_REPLY,
        id: Some(42),
        zone: None,
    }
}

/// One side of a call: the helper's private data and store across packets.
pub(super) struct Call {
    ct: Conntrack,
    pub(super) private: [u8; PRIVATE_LEN],
    store: Store,
    seq: [u32; 2],
    policy: Policy,
}

impl Call {
    fn new(proto: u8) -> Call {
        Call::on(conntrack(proto))
    }

    /// A call on the signalling connection `ct`.
    pub(super) fn on(ct: Conntrack) -> Call {
        Call {
            ct,
            private: [0; PRIVATE_LEN],
            store: Store::for_helper(&crate::helpers::registry::SIP),
            seq: [1000, 9000],
            policy: Policy::default(),
        }
    }

    /// Send a TCP segment whose first `overlap` bytes were sent already (a partial
    /// retransmission).
    pub(super) fn resend(&mut self, dir: Direction, overlap: usize, payload: &[u8]) -> Plan {
        let i = dir.index();
        self.seq[i] = self.seq[i].wrapping_sub(overlap as u32);
        self.send(dir, payload)
    }

    pub(super) fn send(&mut self, dir: Direction, payload: &[u8]) -> Plan {
        let t = self.ct.tuple(dir);
        let transport = if self.ct.orig.proto == IPPROTO_TCP {
            let seq = self.seq[dir.index()];
            self.seq[dir.index()] = seq.wrapping_add(payload.len() as u32);
            Transport::Tcp { seq, flags: 0x18 }
        } else {
            Transport::Udp
        };
        let pkt = Packet {
            dir,
            src: t.src,
            dst: t.dst,
            src_port: t.src_port,
            dst_port: t.dst_port,
            transport,
            payload,
        };
        Sip.analyse(
            &pkt,
            &self.ct,
            &mut self.private,
            &mut self.store,
            self.policy,
        )
    }
}

fn invite(call_id: &str, cseq: u32, addr: &str, port: u16) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    );
    format!(
        "INVITE sip:bob@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK1\r\nFrom: <sip:alice@{PHONE}>;tag=1\r\nTo: <sip:bob@{PBX}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{PHONE}:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn answer(
    call_id: &str,
    cseq: u32,
    method: &str,
    code: u16,
    sdp_addr: Option<(&str, u16)>,
) -> Vec<u8> {
    let sdp = sdp_addr.map_or(String::new(), |(a, p)| {
        format!(
            "v=0\r\no=- 2 2 IN IP4 {a}\r\ns=-\r\nc=IN IP4 {a}\r\nt=0 0\r\nm=audio {p} RTP/AVP 0\r\n"
        )
    });
    let ct = if sdp.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK1\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{ct}Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn request(method: &str, call_id: &str, cseq: u32) -> Vec<u8> {
    format!("{method} sip:bob@{PBX} SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// (src, dst, port) of each expectation, and its pairing.
fn expected(plan: &Plan) -> Vec<(IpAddr, IpAddr, u16, u32, Pairing)> {
    plan.expectations
        .iter()
        .map(|e| (e.exp.src, e.exp.dst, e.exp.dst_port, e.exp.class, e.pairing))
        .collect()
}

fn deleted(plan: &Plan) -> Vec<(IpAddr, IpAddr, u16)> {
    plan.deletions
        .iter()
        .map(|t| (t.src, t.dst, t.dst_port))
        .collect()
}

#[test]
fn a_call_opens_both_directions_of_audio_and_bye_closes_them() {
    let mut c = Call::new(IPPROTO_UDP);
    let p = c.send(Direction::Original, &invite("call-1", 1, PHONE, 49170));
    assert_eq!(
        expected(&p),
        vec![
            (ip(PBX), ip(PHONE), 49170, 1, Pairing::Rtp),
            (ip(PBX), ip(PHONE), 49171, 1, Pairing::Rtcp)
        ]
    );
    assert!(p.refusals.is_empty() && !p.parse_error);
    let p = c.send(
        Direction::Reply,
        &answer("call-1", 1, "INVITE", 200, Some((PBX, 30000))),
    );
    assert_eq!(
        expected(&p),
        vec![
            (ip(PHONE), ip(PBX), 30000, 1, Pairing::Rtp),
            (ip(PHONE), ip(PBX), 30001, 1, Pairing::Rtcp)
        ]
    );
    let p = c.send(Direction::Original, &request("BYE", "call-1", 2));
    assert!(p.expectations.is_empty());
    let mut d = deleted(&p);
    d.sort();
    assert_eq!(
        d,
        vec![
            (ip(PHONE), ip(PBX), 30000),
            (ip(PHONE), ip(PBX), 30001),
            (ip(PBX), ip(PHONE), 49170),
            (ip(PBX), ip(PHONE), 49171),
        ]
    );
    // Nothing left for that call.
    assert!(deleted(&c.send(Direction::Original, &request("BYE", "call-1", 3))).is_empty());
}

#[test]
fn a_bye_closes_only_its_own_call() {
    let mut c = Call::new(IPPROTO_UDP);
    c.send(Direction::Original, &invite("a", 1, PHONE, 40000));
    c.send(Direction::Original, &invite("b", 1, PHONE, 42000));
    let p = c.send(Direction::Reply, &request("BYE", "a", 2));
    let ports: Vec<_> = deleted(&p).iter().map(|d| d.2).collect();
    assert_eq!(ports, vec![40000, 40001]);
}

#[test]
fn a_reinvite_replaces_the_media_and_a_rejected_invite_removes_its_own() {
    let mut c = Call::new(IPPROTO_UDP);
    c.send(Direction::Original, &invite("c", 1, PHONE, 40000));
    let p = c.send(Direction::Original, &invite("c", 2, PHONE, 40010));
    assert_eq!(
        deleted(&p).iter().map(|d| d.2).collect::<Vec<_>>(),
        vec![40000, 40001]
    );
    assert_eq!(expected(&p)[0].2, 40010);
    // 488 to the re-INVITE (CSeq 2): its streams go.
    let p = c.send(Direction::Reply, &answer("c", 2, "INVITE", 488, None));
    assert_eq!(
        deleted(&p).iter().map(|d| d.2).collect::<Vec<_>>(),
        vec![40010, 40011]
    );
    // A 180 without SDP and a 200 to BYE change nothing.
    assert!(
        c.send(Direction::Reply, &answer("c", 3, "INVITE", 180, None))
            .expectations
            .is_empty()
    );
    assert!(deleted(&c.send(Direction::Reply, &answer("c", 4, "BYE", 200, None))).is_empty());
}

/// An INVITE retransmitted after its 200 passed (the 200 was slow to reach the
/// caller: seen in the VM with 20 calls at once) keeps the answer's media; a
/// re-INVITE from the callee whose CSeq number happens to equal the caller's is a
/// new offer and replaces them.
#[test]
fn a_retransmitted_invite_keeps_the_answer_and_the_callee_numbers_its_own() {
    let mut c = Call::new(IPPROTO_UDP);
    c.send(Direction::Original, &invite("r", 1, PHONE, 40000));
    c.send(
        Direction::Reply,
        &answer("r", 1, "INVITE", 200, Some((PBX, 30000))),
    );
    let p = c.send(Direction::Original, &invite("r", 1, PHONE, 40000));
    assert!(deleted(&p).is_empty(), "retransmission: {:?}", deleted(&p));
    assert_eq!(expected(&p).len(), 2, "the offer is expected again");
    // BYE still closes everything, once.
    let p = c.send(Direction::Original, &request("BYE", "r", 2));
    assert_eq!(deleted(&p).len(), 4);

    let mut c = Call::new(IPPROTO_UDP);
    c.send(Direction::Original, &invite("s", 1, PHONE, 40000));
    c.send(
        Direction::Reply,
        &answer("s", 1, "INVITE", 200, Some((PBX, 30000))),
    );
    // The callee's re-INVITE, CSeq 1 in its own numbering.
    let p = c.send(Direction::Reply, &invite("s", 1, PBX, 30010));
    let mut ports: Vec<_> = deleted(&p).iter().map(|d| d.2).collect();
    ports.sort();
    assert_eq!(ports, vec![30000, 30001, 40000, 40001]);
    // A 488 to the callee's re-INVITE removes only what it created.
    let p = c.send(Direction::Original, &answer("s", 1, "INVITE", 488, None));
    let ports: Vec<_> = deleted(&p).iter().map(|d| d.2).collect();
    assert_eq!(ports, vec![30010, 30011]);
}

#[test]
fn third_party_media_and_low_ports_are_refused() {
    let mut c = Call::new(IPPROTO_UDP);
    let p = c.send(Direction::Original, &invite("d", 1, "203.0.113.66", 40000));
    assert!(p.expectations.is_empty());
    assert_eq!(
        p.refusals[0].reason,
        crate::helpers::RefusalReason::ThirdPartyAddress
    );
    assert_eq!(p.refusals[0].sender, ip(PHONE));
    let p = c.send(Direction::Original, &invite("d", 2, PHONE, 22));
    assert!(p.expectations.is_empty());
    assert_eq!(p.refusals[0].reason, crate::helpers::RefusalReason::LowPort);
}

#[test]
fn a_registration_expects_incoming_calls_for_the_granted_time() {
    let mut c = Call::new(IPPROTO_UDP);
    c.send(
        Direction::Original,
        format!("REGISTER sip:{PBX} SIP/2.0\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{PHONE}:5062>\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{PHONE}:5062>;expires=600\r\nContent-Length: 0\r\n\r\n"
    );
    let p = c.send(Direction::Reply, ok.as_bytes());
    assert_eq!(
        expected(&p),
        vec![(ip(PBX), ip(PHONE), 5062, 0, Pairing::Single)]
    );
    assert_eq!(p.expectations[0].timeout, Some(600));
    assert_eq!(p.expectations[0].exp.proto, IPPROTO_UDP);
    assert_eq!(p.expectations[0].exp.flags, expect_flags::PERMANENT);
    // The incoming call is helped wherever it arrives: its INVITE has the SDP.
    assert_eq!(p.expectations[0].exp.helper, Some("sip"));
    assert!(p.private_changed);
    // A refresh deletes and re-creates; a failure deletes; expires=0 deletes.
    let p = c.send(Direction::Reply, ok.as_bytes());
    assert_eq!(deleted(&p), vec![(ip(PBX), ip(PHONE), 5062)]);
    assert_eq!(p.expectations.len(), 1);
    let p = c.send(Direction::Reply, &answer("r", 2, "REGISTER", 403, None));
    assert_eq!(deleted(&p), vec![(ip(PBX), ip(PHONE), 5062)]);
    assert!(p.expectations.is_empty());
    let p = c.send(Direction::Reply, &answer("r", 3, "REGISTER", 403, None));
    assert!(deleted(&p).is_empty(), "nothing registered any more");
    let gone = format!(
        "SIP/2.0 200 OK\r\nCSeq: 4 REGISTER\r\nContact: <sip:alice@{PHONE}:5062>;expires=0\r\nl: 0\r\n\r\n"
    );
    assert!(
        c.send(Direction::Reply, gone.as_bytes())
            .expectations
            .is_empty()
    );
    // Another host's contact is refused.
    let other =
        b"SIP/2.0 200 OK\r\nCSeq: 5 REGISTER\r\nContact: <sip:x@203.0.113.5:5060>\r\nl: 0\r\n\r\n";
    let p = c.send(Direction::Reply, other);
    assert!(p.expectations.is_empty());
    assert_eq!(p.refusals.len(), 1);
}

/// `sip_direct_media 0`: media from any address, still only to the announcer (a
/// third-party c= is refused all the same); the BYE deletes exactly those tuples,
/// even after the option changed back (a reload) in between.
#[test]
fn without_direct_media_media_come_from_anywhere_but_go_only_to_the_announcer() {
    let any4 = ip("0.0.0.0");
    let mut c = Call::new(IPPROTO_UDP);
    c.policy.sip.direct_media = false;
    let p = c.send(Direction::Original, &invite("n", 1, PHONE, 40000));
    assert_eq!(
        expected(&p),
        vec![
            (any4, ip(PHONE), 40000, 1, Pairing::Rtp),
            (any4, ip(PHONE), 40001, 1, Pairing::Rtcp)
        ]
    );
    assert!(p.expectations.iter().all(|e| e.exp.any_source()));
    let p = c.send(Direction::Original, &invite("n2", 1, "203.0.113.66", 40000));
    assert!(p.expectations.is_empty());
    assert_eq!(
        p.refusals[0].reason,
        crate::helpers::RefusalReason::ThirdPartyAddress
    );
    c.policy.sip.direct_media = true;
    let p = c.send(
        Direction::Reply,
        &answer("n", 1, "INVITE", 200, Some((PBX, 30000))),
    );
    assert_eq!(
        expected(&p)[0],
        (ip(PHONE), ip(PBX), 30000, 1, Pairing::Rtp)
    );
    let p = c.send(Direction::Original, &request("BYE", "n", 2));
    let mut d = deleted(&p);
    d.sort();
    assert_eq!(
        d,
        vec![
            (any4, ip(PHONE), 40000),
            (any4, ip(PHONE), 40001),
            (ip(PHONE), ip(PBX), 30000),
            (ip(PHONE), ip(PBX), 30001),
        ]
    );
}

/// `sip_direct_signalling 0`: a registered phone may be called from any address; the
/// contact must still be the phone's own, and the refresh deletes the same tuple.
#[test]
fn without_direct_signalling_calls_to_a_registered_phone_come_from_anywhere() {
    let mut c = Call::new(IPPROTO_UDP);
    c.policy.sip.direct_signalling = false;
    let ok = format!(
        "SIP/2.0 200 OK\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{PHONE}:5062>;expires=600\r\nContent-Length: 0\r\n\r\n"
    );
    let p = c.send(Direction::Reply, ok.as_bytes());
    assert_eq!(
        expected(&p),
        vec![(ip("0.0.0.0"), ip(PHONE), 5062, 0, Pairing::Single)]
    );
    c.policy.sip.direct_signalling = true;
    let p = c.send(Direction::Reply, ok.as_bytes());
    assert_eq!(deleted(&p), vec![(ip("0.0.0.0"), ip(PHONE), 5062)]);
    assert_eq!(
        expected(&p),
        vec![(ip(PBX), ip(PHONE), 5062, 0, Pairing::Single)]
    );
    let other =
        b"SIP/2.0 200 OK\r\nCSeq: 5 REGISTER\r\nContact: <sip:x@203.0.113.5:5060>\r\nl: 0\r\n\r\n";
    c.policy.sip.direct_signalling = false;
    let p = c.send(Direction::Reply, other);
    assert!(p.expectations.is_empty());
    assert_eq!(p.refusals.len(), 1);
}

/// `sip_timeout`: every UDP packet the helper sees, SIP or not, asks for the
/// connection to live that long (as the kernel's nf_conntrack_sip); TCP keeps its
/// own timeouts.
#[test]
fn udp_signalling_lives_for_sip_timeout() {
    let mut c = Call::new(IPPROTO_UDP);
    let p = c.send(Direction::Original, &request("OPTIONS", "o", 1));
    assert_eq!(p.master_timeout, Some(super::super::DEFAULT_TIMEOUT));
    c.policy.sip.timeout = 90;
    assert_eq!(
        c.send(Direction::Reply, b"\r\n\r\n").master_timeout,
        Some(90)
    );
    assert_eq!(
        c.send(Direction::Reply, b"garbage").master_timeout,
        Some(90)
    );
    let mut t = Call::new(IPPROTO_TCP);
    let p = t.send(Direction::Original, &request("OPTIONS", "o", 1));
    assert_eq!(p.master_timeout, None);
}

/// A phone registered over TCP with a contact that names no transport is called over
/// TCP (as the kernel's helper expects it; found by the corpus's VoLTE capture, where
/// we expected UDP).
#[test]
fn a_registration_over_tcp_expects_tcp() {
    let mut c = Call::new(IPPROTO_TCP);
    c.send(
        Direction::Original,
        format!("REGISTER sip:{PBX} SIP/2.0\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{PHONE}:5060>\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{PHONE}:5060>;expires=600\r\nContent-Length: 0\r\n\r\n"
    );
    let p = c.send(Direction::Reply, ok.as_bytes());
    assert_eq!(
        expected(&p),
        vec![(ip(PBX), ip(PHONE), 5060, 0, Pairing::Single)]
    );
    assert_eq!(p.expectations[0].exp.proto, IPPROTO_TCP);
}

#[test]
fn over_tcp_a_split_message_works_and_http_opens_nothing() {
    let mut c = Call::new(IPPROTO_TCP);
    let msg = invite("t", 1, PHONE, 40000);
    let (a, b) = msg.split_at(100);
    assert!(c.send(Direction::Original, a).expectations.is_empty());
    let p = c.send(Direction::Original, b);
    assert_eq!(expected(&p).len(), 2);
    // Two messages in one segment.
    let mut two = request("BYE", "t", 2);
    two.extend_from_slice(&invite("u", 1, PHONE, 41000));
    let p = c.send(Direction::Original, &two);
    assert_eq!(deleted(&p).len(), 2);
    assert_eq!(expected(&p).len(), 2);

    // NAT Slipstreaming: an HTTP request to 5060 with an INVITE in its body.
    let mut c = Call::new(IPPROTO_TCP);
    let body = invite("v", 1, PHONE, 40000);
    let mut http = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    http.extend_from_slice(&body);
    let (a, b) = http.split_at(60);
    assert!(c.send(Direction::Original, a).expectations.is_empty());
    assert!(c.send(Direction::Original, b).expectations.is_empty());
    assert!(c.send(Direction::Original, &body).expectations.is_empty());
}

#[test]
fn private_data_round_trips_and_garbage_is_fresh() {
    let st = State {
        streams: [
            DirState {
                phase: stream::Phase::Sip,
                next: 7,
            },
            DirState::default(),
        ],
        registration: Some(Registration {
            phone: Direction::Reply,
            transport: media::Transport::Tcp,
            port: 5070,
            any_source: false,
        }),
        sides: nat::Sides(0b10),
    };
    let mut private = [0u8; PRIVATE_LEN];
    assert!(st.encode(&mut private));
    assert!(!st.encode(&mut private), "unchanged");
    assert_eq!(State::decode(&private), st);
    // The layout before sip_direct_signalling (bit 1 of the direction byte zero)
    // reads as an exact-source registration.
    assert_eq!(private[REGISTRATION + 1], 1);
    assert_eq!(private[NAT_SIDES], 0b10);
    let any = State {
        registration: Some(Registration {
            any_source: true,
            ..st.registration.unwrap()
        }),
        ..st
    };
    assert!(any.encode(&mut private));
    assert_eq!(private[REGISTRATION + 1], 3);
    assert_eq!(State::decode(&private), any);
    assert_eq!(State::decode(&[9u8; PRIVATE_LEN]), State::default());
    assert_eq!(State::decode(&[]), State::default());
}

#[test]
fn malformed_sip_is_a_parse_error_and_other_udp_is_ignored() {
    let mut c = Call::new(IPPROTO_UDP);
    assert!(
        c.send(
            Direction::Original,
            b"INVITE sip:a@b SIP/2.0\r\nl: 99\r\n\r\nx"
        )
        .parse_error
    );
    let p = c.send(Direction::Original, b"\x00\x01\x00\x00\x21\x12\xa4\x42stun");
    assert!(!p.parse_error && p.expectations.is_empty());
    let p = c.send(Direction::Original, b"\r\n\r\n");
    assert!(!p.parse_error);
}
