//! The SIP helper on translated connections (issue #14): what it rewrites, to the byte,
//! and the expectations it asks for.

use super::tests::Call;
use super::*;
use crate::helpers::Pairing;
use crate::helpers::sip::message::{Framing, Message};
use crate::model::{Tuple, status};
use crate::nat::apply_rewrites;
use crate::nat::mangle::testing::{in_buf, v4_tcp, v4_udp, verified};

const PHONE: &str = "192.0.2.2";
const SERVER: &str = "198.51.100.2";
const PUBLIC: &str = "203.0.113.1";
/// The port masquerading gave the phone's signalling socket.
const MAPPED: u16 = 61000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A phone behind masquerading: phone:5060 -> server:5060, seen outside as
/// PUBLIC:MAPPED.
fn masqueraded(proto: u8) -> Conntrack {
    let orig = Tuple {
        src: ip(PHONE),
        dst: ip(SERVER),
        proto,
        src_port: 5060,
        dst_port: 5060,
    };
    let mut reply = orig.reversed();
    reply.dst = ip(PUBLIC);
    reply.dst_port = MAPPED;
    Conntrack {
        orig,
        reply,
        status: status::CONFIRMED | status::SEEN_REPLY | status::SRC_NAT,
        id: Some(7),
        zone: None,
    }
}

/// A PBX behind a port forward: an outside phone 198.51.100.9:5062 calls PUBLIC:5060,
/// forwarded to the PBX 192.0.2.10:5060.
fn forwarded() -> Conntrack {
    let orig = Tuple {
        src: ip("198.51.100.9"),
        dst: ip(PUBLIC),
        proto: IPPROTO_UDP,
        src_port: 5062,
        dst_port: 5060,
    };
    let reply = Tuple {
        src: ip("192.0.2.10"),
        dst: ip("198.51.100.9"),
        proto: IPPROTO_UDP,
        src_port: 5060,
        dst_port: 5062,
    };
    Conntrack {
        orig,
        reply,
        status: status::CONFIRMED | status::SEEN_REPLY | status::DST_NAT,
        id: Some(8),
        zone: None,
    }
}

/// The payload after the plan's rewrites, each expectation on the port `ports` gives
/// (by index; default: the announced one).
fn rewritten(payload: &[u8], plan: &Plan, ports: &[u16], tcp: bool) -> String {
    let pkt = if tcp {
        v4_tcp(payload)
    } else {
        v4_udp(payload, true)
    };
    let mut buf = in_buf(&pkt, 4096);
    let port_of = |i: usize| {
        ports
            .get(i)
            .copied()
            .or_else(|| plan.expectations.get(i).map(|e| e.exp.dst_port))
    };
    let r = apply_rewrites(&mut buf, pkt.len(), plan, port_of).unwrap();
    String::from_utf8(verified(&buf[..r.len])).unwrap()
}

fn with_sdp(head: &str, sdp: &str) -> Vec<u8> {
    format!(
        "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn offer(addr: &str, audio: u16) -> String {
    format!(
        "v=0\r\no=alice 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
         m=audio {audio} RTP/AVP 0\r\na=rtcp:{}\r\n",
        audio + 1
    )
}

fn phone_invite(host: &str, port: u16, audio: u16) -> Vec<u8> {
    with_sdp(
        &format!(
            "INVITE sip:bob@{SERVER} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK1;rport\r\n\
             From: <sip:alice@{host}>;tag=a\r\n\
             To: <sip:bob@{SERVER}>\r\n\
             Call-ID: nat-1\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:alice@{host}:{port}>\r\n"
        ),
        &offer(host, audio),
    )
}

/// A masqueraded phone's INVITE: Via, From (default port, the phone's own), Contact
/// and the SDP name the public endpoint, the audio pair is expected there and
/// translated back, the body's new length is stated: exact bytes, with the pair
/// where the port search put it.
#[test]
fn masqueraded_invite_is_rewritten_to_the_public_endpoint() {
    let mut c = Call::on(masqueraded(IPPROTO_UDP));
    let msg = phone_invite(PHONE, 5060, 40000);
    let plan = c.send(Direction::Original, &msg);
    assert!(!plan.unrewritten);
    assert_eq!(plan.expectations.len(), 2);
    let (rtp, rtcp) = (&plan.expectations[0], &plan.expectations[1]);
    assert_eq!((rtp.pairing, rtcp.pairing), (Pairing::Rtp, Pairing::Rtcp));
    assert_eq!(
        (rtp.exp.src, rtp.exp.dst, rtp.exp.dst_port),
        (ip(SERVER), ip(PUBLIC), 40000)
    );
    assert_eq!(
        rtp.exp.nat,
        Some(ExpectNat {
            dir: Direction::Reply,
            saved_addr: ip(PHONE),
            saved_port: 40000
        })
    );
    assert_eq!(rtcp.exp.nat.map(|n| n.saved_port), Some(40001));
    // The search moved the pair to 40002/40003.
    let out = rewritten(&msg, &plan, &[40002, 40003], false);
    let want = with_sdp(
        &format!(
            "INVITE sip:bob@{SERVER} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {PUBLIC}:{MAPPED};branch=z9hG4bK1;rport\r\n\
             From: <sip:alice@{PUBLIC}:{MAPPED}>;tag=a\r\n\
             To: <sip:bob@{SERVER}>\r\n\
             Call-ID: nat-1\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:alice@{PUBLIC}:{MAPPED}>\r\n"
        ),
        &offer(PUBLIC, 40002),
    );
    assert_eq!(out, String::from_utf8(want).unwrap());
    // 203.0.113.1 is two bytes longer than 192.0.2.2, twice in the body.
    assert!(
        String::from_utf8(msg)
            .unwrap()
            .contains("Content-Length: 106\r\n")
    );
    assert!(out.contains("Content-Length: 110\r\n"), "{out}");
}

/// The server's answer returns through the NAT: its top Via (the phone's, rewritten on
/// the way out) and its received=/rport= go back to the phone's real endpoint; the
/// server's own SDP is not the phone's and stays, and its media are expected from the
/// phone without NAT (masquerading translates them as any outgoing connection).
#[test]
fn the_answer_gets_the_phones_own_via_back() {
    let mut c = Call::on(masqueraded(IPPROTO_UDP));
    c.send(Direction::Original, &phone_invite(PHONE, 5060, 40000));
    let answer = with_sdp(
        &format!(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP {PUBLIC}:{MAPPED};branch=z9hG4bK1;rport={MAPPED};received={PUBLIC}\r\n\
             From: <sip:alice@{PUBLIC}:{MAPPED}>;tag=a\r\nTo: <sip:bob@{SERVER}>;tag=b\r\n\
             Call-ID: nat-1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{SERVER}>\r\n"
        ),
        &offer(SERVER, 50000),
    );
    let plan = c.send(Direction::Reply, &answer);
    let out = rewritten(&answer, &plan, &[], false);
    let want = with_sdp(
        &format!(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK1;rport=5060;received={PHONE}\r\n\
             From: <sip:alice@{PHONE}:5060>;tag=a\r\nTo: <sip:bob@{SERVER}>;tag=b\r\n\
             Call-ID: nat-1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{SERVER}>\r\n"
        ),
        &offer(SERVER, 50000),
    );
    assert_eq!(out, String::from_utf8(want).unwrap());
    let e = &plan.expectations[0].exp;
    assert_eq!(
        (e.src, e.dst, e.dst_port, e.nat),
        (ip(PHONE), ip(SERVER), 50000, None)
    );
}

/// A phone that learned its public endpoint (STUN) and says so everywhere needs
/// nothing: no rewrite, no expectation, no refusal; and the answer's Via, which names
/// that public endpoint, is not mapped back to an inside address the phone never sent.
#[test]
fn a_phone_that_knows_its_public_endpoint_is_left_alone() {
    let mut c = Call::on(masqueraded(IPPROTO_UDP));
    let msg = phone_invite(PUBLIC, MAPPED, 40000);
    let plan = c.send(Direction::Original, &msg);
    assert!(plan.rewrites.is_empty(), "{:?}", plan.rewrites);
    assert!(plan.expectations.is_empty() && plan.refusals.is_empty());
    assert!(!plan.unrewritten);
    let answer = format!(
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP {PUBLIC}:{MAPPED};branch=z9hG4bK1;rport={MAPPED}\r\n\
         Contact: <sip:alice@{PUBLIC}:{MAPPED}>\r\nCall-ID: nat-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let plan = c.send(Direction::Reply, answer.as_bytes());
    assert!(plan.rewrites.is_empty(), "{:?}", plan.rewrites);
    assert_eq!(c.private[NAT_SIDES], 0);
}

/// REGISTER from behind NAT: the Contact goes out as the public endpoint; the
/// registrar's 2xx names it, so the phone is registered there: calls from the
/// registrar to PUBLIC:MAPPED are expected and translated back to the phone's
/// signalling port; the 2xx reaches the phone with its own contact.
#[test]
fn register_through_nat_expects_calls_on_the_public_contact() {
    let mut c = Call::on(masqueraded(IPPROTO_UDP));
    let register = format!(
        "REGISTER sip:{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK2\r\n\
         From: <sip:alice@{SERVER}>;tag=r\r\nTo: <sip:alice@{SERVER}>\r\nCall-ID: reg-1\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:alice@{PHONE}:5060>\r\nContent-Length: 0\r\n\r\n"
    );
    let plan = c.send(Direction::Original, register.as_bytes());
    let out = rewritten(register.as_bytes(), &plan, &[], false);
    assert!(
        out.contains(&format!("Via: SIP/2.0/UDP {PUBLIC}:{MAPPED};")),
        "{out}"
    );
    assert!(out.contains(&format!("Contact: <sip:alice@{PUBLIC}:{MAPPED}>\r\n")));
    assert!(
        out.contains(&format!("REGISTER sip:{SERVER} SIP/2.0\r\n")),
        "the registrar's URI is not the phone's"
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {PUBLIC}:{MAPPED};branch=z9hG4bK2\r\n\
         Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{PUBLIC}:{MAPPED}>;expires=300\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let plan = c.send(Direction::Reply, ok.as_bytes());
    let out = rewritten(ok.as_bytes(), &plan, &[], false);
    assert!(
        out.contains(&format!(
            "Contact: <sip:alice@{PHONE}:5060>;expires=300\r\n"
        )),
        "{out}"
    );
    assert_eq!(plan.expectations.len(), 1);
    let e = plan.expectations[0];
    assert_eq!(e.timeout, Some(300));
    assert_eq!(
        (e.exp.src, e.exp.dst, e.exp.dst_port, e.exp.proto),
        (ip(SERVER), ip(PUBLIC), MAPPED, IPPROTO_UDP)
    );
    assert_eq!(
        e.exp.nat,
        Some(ExpectNat {
            dir: Direction::Reply,
            saved_addr: ip(PHONE),
            saved_port: 5060
        })
    );
    // Unregistering deletes exactly that expectation.
    let bye = ok
        .replace("expires=300", "expires=0")
        .replace("CSeq: 1", "CSeq: 2");
    let plan = c.send(Direction::Reply, bye.as_bytes());
    assert_eq!(plan.deletions.as_slice(), &[e.exp.tuple()]);
    assert!(plan.expectations.is_empty());
}

/// A PBX behind a port forward answers an outside phone: its Contact and SDP name the
/// public address, its media are expected there (the port forward's address) and
/// translated back to the PBX. Requests to it are mapped back to its real address only
/// once it has sent a request itself.
#[test]
fn a_port_forwarded_pbx_answers_with_the_public_address() {
    let mut c = Call::on(forwarded());
    let outside = "198.51.100.9";
    let invite = with_sdp(
        &format!(
            "INVITE sip:pbx@{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP {outside}:5062;branch=z9hG4bK3\r\n\
             To: <sip:pbx@{PUBLIC}>\r\nCall-ID: fw-1\r\nCSeq: 1 INVITE\r\n"
        ),
        &offer(outside, 30000),
    );
    let plan = c.send(Direction::Original, &invite);
    assert!(
        plan.rewrites.is_empty(),
        "nothing of the outside phone's is translated"
    );
    assert_eq!(plan.expectations[0].exp.nat, None);
    assert_eq!(plan.expectations[0].exp.src, ip("192.0.2.10"));
    let answer = with_sdp(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.9:5062;branch=z9hG4bK3\r\n\
         Call-ID: fw-1\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@192.0.2.10:5060>\r\n",
        &offer("192.0.2.10", 20000),
    );
    let plan = c.send(Direction::Reply, &answer);
    let out = rewritten(&answer, &plan, &[], false);
    let want = with_sdp(
        &format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.9:5062;branch=z9hG4bK3\r\n\
             Call-ID: fw-1\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{PUBLIC}:5060>\r\n"
        ),
        &offer(PUBLIC, 20000),
    );
    assert_eq!(out, String::from_utf8(want).unwrap());
    let e = &plan.expectations[0].exp;
    assert_eq!((e.src, e.dst, e.dst_port), (ip(outside), ip(PUBLIC), 20000));
    assert_eq!(
        e.nat,
        Some(ExpectNat {
            dir: Direction::Original,
            saved_addr: ip("192.0.2.10"),
            saved_port: 20000
        })
    );
    // The PBX was rewritten only in a response: requests to its public contact keep
    // it (the INVITE sent again after the answer leaves as the first copy did).
    let plan = c.send(Direction::Original, &invite);
    assert!(plan.rewrites.is_empty(), "{:?}", plan.rewrites);
    let ack = format!(
        "ACK sip:pbx@{PUBLIC}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {outside}:5062;branch=z9hG4bK4\r\n\
         Call-ID: fw-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    let plan = c.send(Direction::Original, ack.as_bytes());
    assert!(plan.rewrites.is_empty(), "{:?}", plan.rewrites);
    // Once the PBX sends a request of its own (a BYE, its Via rewritten), requests to
    // its public contact are mapped back to its real address.
    let bye = "BYE sip:x@198.51.100.9:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK5\r\n\
               Call-ID: fw-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    let plan = c.send(Direction::Reply, bye.as_bytes());
    let out = rewritten(bye.as_bytes(), &plan, &[], false);
    assert!(
        out.contains(&format!("Via: SIP/2.0/UDP {PUBLIC}:5060;")),
        "{out}"
    );
    let plan = c.send(Direction::Original, ack.as_bytes());
    let out = rewritten(ack.as_bytes(), &plan, &[], false);
    assert!(
        out.starts_with("ACK sip:pbx@192.0.2.10:5060 SIP/2.0\r\n"),
        "{out}"
    );
}

/// Over TCP: two messages in one segment are both rewritten; a message split across
/// segments passes unchanged (its first part is gone), is counted, and nothing it
/// announces through the NAT is expected.
#[test]
fn tcp_messages_are_rewritten_whole_or_not_at_all() {
    let mut c = Call::on(masqueraded(IPPROTO_TCP));
    let one = phone_invite(PHONE, 5060, 40000);
    let two = String::from_utf8(phone_invite(PHONE, 5060, 42000))
        .unwrap()
        .replace("nat-1", "nat-2")
        .into_bytes();
    let both = [one.clone(), two.clone()].concat();
    let plan = c.send(Direction::Original, &both);
    assert_eq!(plan.expectations.len(), 4);
    let out = rewritten(&both, &plan, &[], true);
    assert_eq!(
        out.matches(&format!("Contact: <sip:alice@{PUBLIC}:{MAPPED}>"))
            .count(),
        2
    );
    assert!(out.contains("m=audio 40000 ") && out.contains("m=audio 42000 "));
    assert!(!out.contains(PHONE), "{out}");

    let three = String::from_utf8(phone_invite(PHONE, 5060, 44000))
        .unwrap()
        .replace("nat-1", "nat-3")
        .into_bytes();
    let (a, b) = three.split_at(100);
    let plan = c.send(Direction::Original, a);
    assert!(
        plan.rewrites.is_empty() && !plan.unrewritten,
        "incomplete: nothing yet"
    );
    let plan = c.send(Direction::Original, b);
    assert!(plan.unrewritten);
    assert!(plan.rewrites.is_empty());
    assert!(plan.expectations.is_empty());
}

/// Without NAT nothing is rewritten and the expectations carry no NAT section (the
/// path of every other test in helper/tests.rs).
#[test]
fn untranslated_connections_get_no_rewrites() {
    let mut ct = masqueraded(IPPROTO_UDP);
    ct.reply = ct.orig.reversed();
    ct.status = status::CONFIRMED;
    let mut c = Call::on(ct);
    let plan = c.send(Direction::Original, &phone_invite(PHONE, 5060, 40000));
    assert!(plan.rewrites.is_empty());
    assert!(plan.expectations.iter().all(|e| e.exp.nat.is_none()));
}

/// Repeated (agreeing) Content-Length headers all state the new length: left with the
/// old one the message would no longer parse (found by the sip_nat fuzz target).
#[test]
fn every_content_length_is_rewritten() {
    let mut c = Call::on(masqueraded(IPPROTO_UDP));
    let msg = String::from_utf8(phone_invite(PHONE, 5060, 40000)).unwrap();
    let msg = msg.replacen(
        "Content-Length: 106\r\n",
        "Content-Length: 106\r\nl: 106\r\n",
        1,
    );
    let plan = c.send(Direction::Original, msg.as_bytes());
    let out = rewritten(msg.as_bytes(), &plan, &[], false);
    assert!(out.contains("Content-Length: 110\r\nl: 110\r\n"), "{out}");
    assert!(Message::parse(out.as_bytes(), Framing::Datagram).is_ok());
}

/// A stream whose RTCP (on its own a=rtcp port) finds no room left in the plan is given
/// up whole: no RTP expectation stays behind that no rewrite announces and no dialog
/// remembers (found by the sip_nat fuzz target).
#[test]
fn a_stream_without_room_for_its_rtcp_is_given_up_whole() {
    let mut c = Call::on(masqueraded(IPPROTO_UDP));
    // One RTP-only stream (no port after 65535), then six with a=rtcp elsewhere: the
    // sixth's RTP takes the plan's last place, its RTCP finds none.
    let mut sdp = format!("v=0\r\no=- 1 1 IN IP4 {PHONE}\r\ns=-\r\nc=IN IP4 {PHONE}\r\nt=0 0\r\n");
    sdp += "m=audio 65535 RTP/AVP 0\r\n";
    for k in 0..6u16 {
        sdp += &format!(
            "m=audio {} RTP/AVP 0\r\na=rtcp:{}\r\n",
            40000 + 10 * k,
            50000 + 10 * k
        );
    }
    let msg = with_sdp(
        &format!(
            "INVITE sip:bob@{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK9\r\n\
             Call-ID: full-1\r\nCSeq: 1 INVITE\r\n"
        ),
        &sdp,
    );
    let plan = c.send(Direction::Original, &msg);
    assert_eq!(plan.expectations.len(), 11, "{:?}", plan.expectations);
    assert!(plan.expectations.iter().all(|e| e.exp.dst_port != 40050));
    let out = rewritten(&msg, &plan, &[], false);
    assert!(out.contains("m=audio 40040 RTP/AVP 0\r\na=rtcp:50040\r\n"));
}

/// A TCP segment that repeats the end of the last one (a partial retransmission)
/// before a new message: the new message's rewrites land on it, past the repeated
/// bytes (found by the sip_nat fuzz target).
#[test]
fn a_partial_retransmission_is_rewritten_at_its_new_bytes() {
    let mut c = Call::on(masqueraded(IPPROTO_TCP));
    let one = phone_invite(PHONE, 5060, 40000);
    c.send(Direction::Original, &one);
    let two = String::from_utf8(phone_invite(PHONE, 5060, 42000))
        .unwrap()
        .replace("nat-1", "nat-2")
        .into_bytes();
    let repeated = &one[one.len() - 10..];
    let segment = [repeated, &two].concat();
    let plan = c.resend(Direction::Original, repeated.len(), &segment);
    assert!(!plan.unrewritten);
    let out = rewritten(&segment, &plan, &[], true);
    assert!(out.as_bytes().starts_with(repeated), "{out}");
    let rest = &out[repeated.len()..];
    assert!(rest.starts_with("INVITE sip:bob@"), "{out}");
    assert!(
        rest.contains(&format!("Contact: <sip:alice@{PUBLIC}:{MAPPED}>")),
        "{out}"
    );
    assert!(!rest.contains(PHONE), "{out}");
}
