//! What a SIP message asks to have opened, decided from its parsed parts (pure): the
//! media streams an SDP body announces, and the contact bindings a registrar's 2xx
//! answer to REGISTER confirms. The SIP helper turns these into expectations; what is
//! refused here is never opened, whatever the message says.
//!
//! Rules (the kernel's nf_conntrack_sip defaults, and stricter where noted):
//! - media: m=audio/video/image with a port; port 0 (disabled), a=inactive and the hold
//!   address (0.0.0.0 / ::) open nothing; with `direct_media` (the kernel's
//!   `sip_direct_media=1`, the default) the c= address must be the sender's own; ports
//!   below 1024 are refused (the kernel drops such a message); multicast and broadcast
//!   addresses are refused (stricter); RTCP is on a=rtcp's port or RTP+1.
//! - registrations: each Contact of a 2xx answer to REGISTER whose host is the phone's
//!   own address (the REGISTER's sender), with its transport, port (5060, 5061 for
//!   sips) and granted expiry (the contact's expires parameter, else the Expires header,
//!   else 3600 s as RFC 3261 §10.2.1.1 says).

use core::net::IpAddr;

use super::message::{Message, Name, parse_seconds};
use super::sdp::{Direction, MediaKind, Session};
use super::uri::{Scheme, param, parse_address, parse_uri};
use crate::helpers::RefusalReason;

/// Expectation classes, numbered as the kernel's nf_conntrack_sip policy (and so as the
/// registered helper's policy sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Signalling = 0,
    Audio = 1,
    Video = 2,
    Image = 3,
}

/// Media streams opened per message (as many as SDP media lines are described).
pub const MAX_TARGETS: usize = super::sdp::MAX_MEDIA;
/// Registrations confirmed per answer.
pub const MAX_BINDINGS: usize = 4;
/// Refusals reported per message.
pub const MAX_REFUSALS: usize = 4;
/// Lowest port a media stream may use.
pub const MIN_MEDIA_PORT: u16 = 1024;
/// The registration interval when the registrar names none (RFC 3261 §10.2.1.1).
pub const DEFAULT_EXPIRES: u32 = 3600;
/// Default SIP ports.
pub const SIP_PORT: u16 = 5060;
pub const SIPS_PORT: u16 = 5061;

/// One media stream to expect: RTP to `addr:rtp` and RTCP to `addr:rtcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaTarget {
    pub class: Class,
    pub addr: IpAddr,
    pub rtp: u16,
    /// None when RTP is on 65535 and no a=rtcp names another port.
    pub rtcp: Option<u16>,
    /// Index of the m= line in the session (for NAT rewrites of its port).
    pub media: usize,
}

/// Something announced and deliberately not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub what: &'static str,
    pub addr: IpAddr,
    pub port: u16,
    pub reason: RefusalReason,
}

/// The media targets of `session`, sent by `sender`. Only the sender's own address is
/// ever a target, whatever `sip_direct_media` says (that option widens where media may
/// come from, never where they go): anything else would let whoever can put an SDP body
/// on a helped port open a door to another host. Behind NAT, media announced on the
/// sender's translated address (`public`: a phone that learned it by STUN and keeps
/// its own mapping open) need nothing from us: skipped, not refused.
pub fn media_targets(
    session: &Session,
    sender: IpAddr,
    public: IpAddr,
    targets: &mut heapless::Vec<MediaTarget, MAX_TARGETS>,
    refused: &mut heapless::Vec<Refused, MAX_REFUSALS>,
) {
    for (index, m) in session.media.iter().enumerate() {
        let (class, what) = match m.kind {
            MediaKind::Audio => (Class::Audio, "m=audio"),
            MediaKind::Video => (Class::Video, "m=video"),
            MediaKind::Image => (Class::Image, "m=image"),
            MediaKind::Other => continue,
        };
        if m.port == 0 || m.direction == Direction::Inactive {
            continue;
        }
        let Some(addr) = session.media_address(m).map(|a| a.addr) else {
            continue;
        };
        if addr.is_unspecified() || (addr == public && addr != sender) {
            continue;
        }
        let mut refuse = |reason, port| {
            let _ = refused.push(Refused {
                what,
                addr,
                port,
                reason,
            });
        };
        if addr != sender || addr.is_multicast() || is_broadcast(addr) {
            refuse(RefusalReason::ThirdPartyAddress, m.port);
            continue;
        }
        if m.port < MIN_MEDIA_PORT {
            refuse(RefusalReason::LowPort, m.port);
            continue;
        }
        let rtcp = match m.rtcp {
            Some((p, _)) if p < MIN_MEDIA_PORT => {
                refuse(RefusalReason::LowPort, p);
                continue;
            }
            Some((p, _)) => Some(p),
            None => m.port.checked_add(1),
        };
        if targets.iter().any(|t| t.addr == addr && t.rtp == m.port) {
            continue;
        }
        let _ = targets.push(MediaTarget {
            class,
            addr,
            rtp: m.port,
            rtcp,
            media: index,
        });
    }
}

fn is_broadcast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_broadcast(),
        IpAddr::V6(_) => false,
    }
}

/// Transport of a registered contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A confirmed registration: calls for the phone arrive at `addr:port` over `transport`
/// for `expires` seconds (0: the binding was removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub addr: IpAddr,
    pub port: u16,
    pub transport: Transport,
    pub expires: u32,
}

/// The bindings a 2xx answer to REGISTER confirms for `phone` (the REGISTER's sender,
/// i.e. the answer's destination), which registered over `signalling`. Contacts of
/// other hosts are refused; a contact named by host name is skipped. A contact without
/// a transport parameter is reached over the registration's own transport (TCP for
/// sips:), as the kernel's helper does: a phone registered over TCP is called over TCP.
pub fn register_bindings(
    msg: &Message<'_>,
    phone: IpAddr,
    signalling: Transport,
    bindings: &mut heapless::Vec<Binding, MAX_BINDINGS>,
    refused: &mut heapless::Vec<Refused, MAX_REFUSALS>,
) {
    let buf = msg.buf();
    let header_expires = msg
        .header(Name::Expires)
        .and_then(|h| parse_seconds(msg.bytes(&h.value)));
    for value in msg.values(Name::Contact) {
        let Some(address) = parse_address(buf, value) else {
            continue;
        };
        let Some(uri) = parse_uri(buf, address.uri.clone()) else {
            continue;
        };
        let Some(addr) = uri.host.addr else {
            continue;
        };
        let default_port = match uri.scheme {
            Scheme::Sip => SIP_PORT,
            Scheme::Sips => SIPS_PORT,
            Scheme::Other => continue,
        };
        let port = uri.host.port.unwrap_or(default_port);
        if addr != phone {
            let _ = refused.push(Refused {
                what: "Contact",
                addr,
                port,
                reason: RefusalReason::ThirdPartyAddress,
            });
            continue;
        }
        let transport = match param(buf, uri.params.clone(), b"transport").and_then(|t| buf.get(t))
        {
            Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
            Some(t) if t.eq_ignore_ascii_case(b"udp") => Transport::Udp,
            _ if uri.scheme == Scheme::Sips => Transport::Tcp,
            _ => signalling,
        };
        let expires = param(buf, address.params.clone(), b"expires")
            .and_then(|r| parse_seconds(buf.get(r)?))
            .or(header_expires)
            .unwrap_or(DEFAULT_EXPIRES);
        if !bindings
            .iter()
            .any(|b| b.addr == addr && b.port == port && b.transport == transport)
        {
            let _ = bindings.push(Binding {
                addr,
                port,
                transport,
                expires,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::Framing;
    use super::super::sdp;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn targets_of(sdp_text: &[u8], sender: &str) -> (Vec<MediaTarget>, Vec<Refused>) {
        let s = sdp::parse(sdp_text, 0..sdp_text.len());
        let mut t = heapless::Vec::new();
        let mut r = heapless::Vec::new();
        media_targets(&s, ip(sender), ip(sender), &mut t, &mut r);
        (t.to_vec(), r.to_vec())
    }

    #[test]
    fn audio_and_video_of_the_sender() {
        let (t, r) = targets_of(
            b"c=IN IP4 192.0.2.2\nm=audio 49170 RTP/AVP 0\nm=video 51372 RTP/AVP 31\na=rtcp:51400\nm=image 6000 udptl t38\n",
            "192.0.2.2");
        assert!(r.is_empty());
        assert_eq!(
            t,
            vec![
                MediaTarget {
                    class: Class::Audio,
                    addr: ip("192.0.2.2"),
                    rtp: 49170,
                    rtcp: Some(49171),
                    media: 0
                },
                MediaTarget {
                    class: Class::Video,
                    addr: ip("192.0.2.2"),
                    rtp: 51372,
                    rtcp: Some(51400),
                    media: 1
                },
                MediaTarget {
                    class: Class::Image,
                    addr: ip("192.0.2.2"),
                    rtp: 6000,
                    rtcp: Some(6001),
                    media: 2
                },
            ]
        );
    }

    #[test]
    fn third_party_multicast_and_broadcast_media_are_refused() {
        let sdp = b"c=IN IP4 198.51.100.77\nm=audio 4000 RTP/AVP 0\n";
        let (t, r) = targets_of(sdp, "192.0.2.2");
        assert!(t.is_empty());
        assert_eq!(r[0].reason, RefusalReason::ThirdPartyAddress);
        assert_eq!((r[0].addr, r[0].port), (ip("198.51.100.77"), 4000));
        // Media level c= naming someone else, under a session c= of the sender's.
        let (t, r) = targets_of(
            b"c=IN IP4 192.0.2.2\nm=audio 4000 RTP/AVP 0\nc=IN IP4 192.0.2.99\n",
            "192.0.2.2",
        );
        assert!(t.is_empty());
        assert_eq!(r[0].addr, ip("192.0.2.99"));
        // Multicast and broadcast are refused even when the sender claims to be one.
        for c in ["233.252.0.1", "255.255.255.255", "ff0e::1"] {
            let fam = if c.contains(':') { "IP6" } else { "IP4" };
            let sdp = format!("c=IN {fam} {c}\nm=audio 4000 RTP/AVP 0\n");
            let (t, r) = targets_of(sdp.as_bytes(), c);
            assert!(t.is_empty(), "{c}");
            assert_eq!(r.len(), 1, "{c}");
        }
    }

    #[test]
    fn disabled_held_inactive_low_and_odd_streams() {
        let (t, r) = targets_of(b"c=IN IP4 192.0.2.2\nm=audio 0 RTP/AVP 0\n", "192.0.2.2");
        assert!(t.is_empty() && r.is_empty(), "port 0: disabled");
        let (t, r) = targets_of(b"c=IN IP4 0.0.0.0\nm=audio 4000 RTP/AVP 0\n", "192.0.2.2");
        assert!(t.is_empty() && r.is_empty(), "hold");
        let (t, r) = targets_of(
            b"c=IN IP4 192.0.2.2\nm=audio 4000 RTP/AVP 0\na=inactive\n",
            "192.0.2.2",
        );
        assert!(t.is_empty() && r.is_empty(), "inactive");
        let (t, r) = targets_of(b"c=IN IP4 192.0.2.2\nm=audio 22 RTP/AVP 0\n", "192.0.2.2");
        assert!(t.is_empty());
        assert_eq!(r[0].reason, RefusalReason::LowPort);
        let (t, r) = targets_of(
            b"c=IN IP4 192.0.2.2\nm=audio 4000 RTP/AVP 0\na=rtcp:53\n",
            "192.0.2.2",
        );
        assert!(t.is_empty());
        assert_eq!((r[0].reason, r[0].port), (RefusalReason::LowPort, 53));
        let (t, _) = targets_of(
            b"c=IN IP4 192.0.2.2\nm=audio 65535 RTP/AVP 0\n",
            "192.0.2.2",
        );
        assert_eq!(t[0].rtcp, None);
        // No c= at all, an unknown media type, the same stream twice.
        let (t, r) = targets_of(b"m=audio 4000 RTP/AVP 0\n", "192.0.2.2");
        assert!(t.is_empty() && r.is_empty());
        let (t, _) = targets_of(
            b"c=IN IP4 192.0.2.2\nm=application 4000 TCP x\nm=audio 4000 RTP/AVP 0\nm=audio 4000 RTP/AVP 8\n",
            "192.0.2.2");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].media, 1);
    }

    /// Behind NAT a phone that announces its public address (learned by STUN) is left
    /// to its own traversal: nothing expected, nothing refused.
    #[test]
    fn media_on_the_senders_public_address_are_skipped() {
        let sdp = b"c=IN IP4 203.0.113.1\nm=audio 4000 RTP/AVP 0\n";
        let s = sdp::parse(sdp, 0..sdp.len());
        let (mut t, mut r) = (heapless::Vec::new(), heapless::Vec::new());
        media_targets(&s, ip("192.0.2.2"), ip("203.0.113.1"), &mut t, &mut r);
        assert!(t.is_empty() && r.is_empty());
        // Another address is still a third party.
        media_targets(&s, ip("192.0.2.2"), ip("203.0.113.9"), &mut t, &mut r);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn ipv6_media() {
        let (t, _) = targets_of(
            b"c=IN IP6 2001:db8::2\nm=audio 4000 RTP/AVP 0\n",
            "2001:db8::2",
        );
        assert_eq!(t[0].addr, ip("2001:db8::2"));
    }

    fn bindings_of(msg: &[u8], phone: &str) -> (Vec<Binding>, Vec<Refused>) {
        bindings_over(msg, phone, Transport::Udp)
    }

    fn bindings_over(
        msg: &[u8],
        phone: &str,
        signalling: Transport,
    ) -> (Vec<Binding>, Vec<Refused>) {
        let m = Message::parse(msg, Framing::Datagram).unwrap();
        let mut b = heapless::Vec::new();
        let mut r = heapless::Vec::new();
        register_bindings(&m, ip(phone), signalling, &mut b, &mut r);
        (b.to_vec(), r.to_vec())
    }

    /// A contact without a transport parameter is reached over the transport the phone
    /// registered on (the corpus's VoLTE phone registers over TCP with such a contact);
    /// an explicit transport wins.
    #[test]
    fn a_contact_without_transport_uses_the_registrations_own() {
        let ok =
            b"SIP/2.0 200 OK\r\nContact: <sip:[2001:db8::2]:5060>;expires=3600\r\nl: 0\r\n\r\n";
        for signalling in [Transport::Udp, Transport::Tcp] {
            let (b, _) = bindings_over(ok, "2001:db8::2", signalling);
            assert_eq!(b[0].transport, signalling);
        }
        let udp =
            b"SIP/2.0 200 OK\r\nContact: <sip:a@192.0.2.2:5062;transport=UDP>\r\nl: 0\r\n\r\n";
        assert_eq!(
            bindings_over(udp, "192.0.2.2", Transport::Tcp).0[0].transport,
            Transport::Udp
        );
        let tcp =
            b"SIP/2.0 200 OK\r\nContact: <sip:a@192.0.2.2:5062;transport=tcp>\r\nl: 0\r\n\r\n";
        assert_eq!(
            bindings_over(tcp, "192.0.2.2", Transport::Udp).0[0].transport,
            Transport::Tcp
        );
    }

    #[test]
    fn registrations_of_the_phone() {
        let ok = b"SIP/2.0 200 OK\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:alice@192.0.2.2:5070;transport=TCP>;expires=300, <sip:alice@192.0.2.2>\r\n\
Contact: <sip:alice@198.51.100.66:5060>;expires=300\r\n\
Contact: <sip:alice@phone.example.com>\r\n\
Expires: 1200\r\n\
Content-Length: 0\r\n\r\n";
        let (b, r) = bindings_of(ok, "192.0.2.2");
        assert_eq!(
            b,
            vec![
                Binding {
                    addr: ip("192.0.2.2"),
                    port: 5070,
                    transport: Transport::Tcp,
                    expires: 300
                },
                Binding {
                    addr: ip("192.0.2.2"),
                    port: 5060,
                    transport: Transport::Udp,
                    expires: 1200
                },
            ]
        );
        assert_eq!(r.len(), 1, "another host's contact");
        assert_eq!(r[0].addr, ip("198.51.100.66"));
        // Removal (expires=0), sips default port, no Expires anywhere.
        let (b, _) = bindings_of(
            b"SIP/2.0 200 OK\r\nm: <sips:a@[2001:db8::2]>;expires=0\r\nl: 0\r\n\r\n",
            "2001:db8::2",
        );
        assert_eq!(
            b,
            vec![Binding {
                addr: ip("2001:db8::2"),
                port: 5061,
                transport: Transport::Tcp,
                expires: 0
            }]
        );
        let (b, _) = bindings_of(
            b"SIP/2.0 200 OK\r\nContact: <sip:a@192.0.2.2:5062>\r\nl: 0\r\n\r\n",
            "192.0.2.2",
        );
        assert_eq!(b[0].expires, DEFAULT_EXPIRES);
    }
}
