//! Arbitrary bytes as a SIP message (first byte: bit 0 = stream framing) through the
//! message parser, the header iterators, the URI/Via/address parsers on every value and
//! the SDP parser on the body. Oracles: no panic; every range lies inside the input; a
//! stream message's length never exceeds the input; the body is where Content-Length says;
//! an SDP address or port is text of the body.
#![no_main]

use cthelperd::helpers::sip::message::{Framing, Message, Name};
use cthelperd::helpers::sip::{sdp, uri};
use libfuzzer_sys::fuzz_target;

fn inside(r: &core::ops::Range<usize>, len: usize) {
    assert!(r.start <= r.end && r.end <= len, "{r:?} outside {len}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let framing = if flags & 1 == 0 {
        Framing::Datagram
    } else {
        Framing::Stream
    };
    let Ok(m) = Message::parse(bytes, framing) else {
        return;
    };
    let len = bytes.len();
    assert!(m.len() <= len);
    inside(&m.body, len);
    if framing == Framing::Stream {
        // A stream message is delimited by its Content-Length.
        let cl = m
            .header(Name::ContentLength)
            .expect("a stream message has a Content-Length");
        let n: usize = core::str::from_utf8(m.bytes(&cl.value))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(m.body.len(), n);
    }
    if let cthelperd::helpers::sip::message::Start::Request { uri, .. } = &m.start {
        inside(uri, len);
        if let Some(u) = uri::parse_uri(bytes, uri.clone()) {
            inside(&u.host.host, len);
            inside(&u.params, len);
        }
    }
    for h in m.headers() {
        if let Ok(h) = h {
            inside(&h.value, len);
        }
    }
    for v in m.values(Name::Via) {
        inside(&v, len);
        if let Some(via) = uri::parse_via(bytes, v) {
            inside(&via.sent_by.host, len);
            if let Some(p) = &via.sent_by.port_text {
                inside(p, len);
            }
            for name in [&b"received"[..], b"rport", b"maddr", b"branch"] {
                if let Some(r) = uri::param(bytes, via.params.clone(), name) {
                    inside(&r, len);
                }
            }
        }
    }
    for name in [Name::Contact, Name::From, Name::To] {
        for v in m.values(name) {
            if let Some(a) = uri::parse_address(bytes, v) {
                inside(&a.uri, len);
                inside(&a.params, len);
                if let Some(u) = uri::parse_uri(bytes, a.uri.clone()) {
                    inside(&u.host.host, len);
                }
                if let Some(r) = uri::param(bytes, a.params, b"expires") {
                    inside(&r, len);
                }
            }
        }
    }
    let s = sdp::parse(bytes, m.body.clone());
    let within_body = |r: &core::ops::Range<usize>| {
        assert!(m.body.start <= r.start && r.end <= m.body.end, "{r:?} not in the body");
    };
    for a in s.origin.iter().chain(s.connection.iter()) {
        within_body(&a.text);
    }
    for media in &s.media {
        within_body(&media.port_text);
        if let Some(c) = &media.connection {
            within_body(&c.text);
        }
        if let Some((_, r)) = &media.rtcp {
            within_body(r);
        }
    }
});
