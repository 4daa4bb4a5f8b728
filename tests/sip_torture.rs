//! The RFC 4475 SIP torture messages of the shared corpus through the SIP parsers: every
//! valid message parses, the invalid ones that matter to a helper are refused for the
//! right reason, and nothing panics. (What the SIP helper then opens is judged with the
//! helper, by replay.)

// The shared-corpus locator lives with the replay-based corpus tests.
#![cfg(feature = "replay")]

mod common;

use cthelperd::helpers::sip::message::{Error, Framing, Message, Name};
use cthelperd::helpers::sip::{sdp, uri};

/// Everything the helper would look at in a message.
fn walk(m: &Message<'_>) {
    let buf = m.buf();
    for h in m.headers() {
        let Ok(h) = h else { continue };
        assert!(h.value.start <= h.value.end && h.value.end <= buf.len());
    }
    for v in m.values(Name::Via) {
        let _ = uri::parse_via(buf, v);
    }
    for name in [Name::Contact, Name::From, Name::To] {
        for v in m.values(name) {
            if let Some(a) = uri::parse_address(buf, v) {
                let _ = uri::parse_uri(buf, a.uri.clone());
                let _ = uri::param(buf, a.params, b"expires");
            }
        }
    }
    let s = sdp::parse(buf, m.body.clone());
    for media in &s.media {
        assert!(media.port_text.end <= m.body.end);
    }
}

#[test]
fn rfc4475_messages() {
    let Some(messages) = common::corpus::torture_messages() else {
        return;
    };
    assert_eq!(messages.len(), 49);
    let mut parsed = 0;
    for (name, bytes) in &messages {
        for framing in [Framing::Datagram, Framing::Stream] {
            if let Ok(m) = Message::parse(bytes, framing) {
                walk(&m);
            }
        }
        let result = Message::parse(bytes, Framing::Datagram);
        // RFC 4475 3.1.1: valid messages a parser must accept.
        if name.starts_with("rfc4475-3.1.1.") {
            assert!(result.is_ok(), "{name}: {result:?}");
        }
        let expected_error = match name.as_str() {
            // Content-Length larger than the body.
            "rfc4475-3.1.2.2-clerr.txt" => Some(Error::Incomplete),
            // Negative Content-Length; two different Content-Lengths.
            "rfc4475-3.1.2.3-ncl.txt" | "rfc4475-3.3.9-mcl01.txt" => Some(Error::BadContentLength),
            // Status code 4294967301; SIP/7.0; whitespace before the method; spaces in the
            // Request-URI; trailing whitespace on the request line.
            "rfc4475-3.1.2.19-bigcode.txt"
            | "rfc4475-3.1.2.16-badvers.txt"
            | "rfc4475-3.1.2.9-lwsstart.txt"
            | "rfc4475-3.1.2.8-lwsruri.txt"
            | "rfc4475-3.1.2.10-trws.txt" => Some(Error::NotSip),
            _ => None,
        };
        if let Some(e) = expected_error {
            assert_eq!(result.as_ref().err(), Some(&e), "{name}");
        }
        parsed += usize::from(result.is_ok());
    }
    assert!(parsed >= 40, "{parsed} of 49 parsed");
}
