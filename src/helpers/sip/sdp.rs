//! SDP session descriptions (RFC 4566) as far as media pinholes need them: the origin
//! (o=) and connection (c=) addresses at session and media level, the media lines (m=)
//! with their ports, a=rtcp (RFC 3605) and the direction attributes. Ranges index the
//! message buffer, so a NAT rewrite can replace exactly the address or port text.
//!
//! Only the body as Content-Length delimits it is parsed (the kernel's helper reads the
//! whole datagram, so m= lines smuggled past Content-Length open ports there).

use core::net::IpAddr;
use core::ops::Range;

/// Media descriptions kept per body; further m= lines are counted, not used.
pub const MAX_MEDIA: usize = 8;

/// The media types the kernel's expectation classes know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    /// T.38 fax (m=image).
    Image,
    Other,
}

/// a=sendrecv (the default), sendonly, recvonly, inactive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// A c= or o= address with where its text is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub addr: IpAddr,
    pub text: Range<usize>,
}

/// One m= line and what applies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub kind: MediaKind,
    /// 0: the stream is disabled.
    pub port: u16,
    pub port_text: Range<usize>,
    /// The media-level c=, if any (it overrides the session's).
    pub connection: Option<Address>,
    /// a=rtcp port (and its text), if given.
    pub rtcp: Option<(u16, Range<usize>)>,
    pub direction: Direction,
}

/// What a body describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub origin: Option<Address>,
    /// Session-level c=.
    pub connection: Option<Address>,
    pub media: heapless::Vec<Media, MAX_MEDIA>,
    /// m= lines beyond MAX_MEDIA, not described.
    pub media_dropped: u16,
    /// Session-level direction attribute (media-level ones override it).
    pub direction: Option<Direction>,
    /// Lines that looked like o=, c=, m= or a=rtcp but did not parse.
    pub malformed: u16,
}

impl Session {
    /// Where media `m` is sent to: its own c=, else the session's.
    pub fn media_address<'a>(&'a self, m: &'a Media) -> Option<&'a Address> {
        m.connection.as_ref().or(self.connection.as_ref())
    }
}

/// `IN IP4 <addr>` / `IN IP6 <addr>` starting at `buf[at..end]` (a c= value after any
/// leading fields); the address must match its type and may carry a /ttl suffix (c=).
fn parse_net_address(buf: &[u8], at: usize, end: usize) -> Option<Address> {
    let s = buf.get(at..end)?;
    let mut fields = s.split(|&b| b == b' ').filter(|f| !f.is_empty());
    if fields.next()? != b"IN" {
        return None;
    }
    let addr_type = fields.next()?;
    let text = fields.next()?;
    let start = at + (text.as_ptr() as usize - s.as_ptr() as usize);
    // Multicast c= may carry /ttl[/count]; the address is what comes before.
    let len = text.iter().position(|&b| b == b'/').unwrap_or(text.len());
    let literal = core::str::from_utf8(text.get(..len)?).ok()?;
    let addr = match addr_type {
        b"IP4" => IpAddr::V4(literal.parse().ok()?),
        // IPv6 literals are unbracketed in SDP.
        b"IP6" => IpAddr::V6(literal.parse().ok()?),
        _ => return None,
    };
    Some(Address {
        addr,
        text: start..start + len,
    })
}

/// Decimal port digits at `buf[at..end]`.
fn parse_port(buf: &[u8], at: usize, end: usize) -> Option<(u16, Range<usize>)> {
    let s = buf.get(at..end)?;
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 5 {
        return None;
    }
    let n = s
        .get(..digits)?
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    Some((u16::try_from(n).ok()?, at..at + digits))
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...` (value after "m=").
fn parse_media(buf: &[u8], at: usize, end: usize) -> Option<Media> {
    let s = buf.get(at..end)?;
    let sp = s.iter().position(|&b| b == b' ')?;
    let kind = match s.get(..sp)? {
        b"audio" => MediaKind::Audio,
        b"video" => MediaKind::Video,
        b"image" => MediaKind::Image,
        _ => MediaKind::Other,
    };
    let (port, port_text) = parse_port(buf, at + sp + 1, end)?;
    // After the port: '/count' or ' proto', on this line.
    if port_text.end >= end {
        return None;
    }
    match buf.get(port_text.end) {
        Some(b' ') | Some(b'/') => {}
        _ => return None,
    }
    Some(Media {
        kind,
        port,
        port_text,
        connection: None,
        rtcp: None,
        direction: Direction::SendRecv,
    })
}

fn direction(attr: &[u8]) -> Option<Direction> {
    Some(match attr {
        b"sendrecv" => Direction::SendRecv,
        b"sendonly" => Direction::SendOnly,
        b"recvonly" => Direction::RecvOnly,
        b"inactive" => Direction::Inactive,
        _ => return None,
    })
}

/// Parse the SDP body at `buf[body]`. Never fails: what does not parse is counted in
/// `malformed` and creates nothing.
pub fn parse(buf: &[u8], body: Range<usize>) -> Session {
    let mut session = Session::default();
    let mut at = body.start;
    let end = body.end.min(buf.len());
    while at < end {
        let line_end = buf
            .get(at..end)
            .and_then(|s| s.iter().position(|&b| b == b'\n'))
            .map_or(end, |p| at + p);
        let next = line_end + 1;
        let text_end = if line_end > at && buf.get(line_end - 1) == Some(&b'\r') {
            line_end - 1
        } else {
            line_end
        };
        let line = buf.get(at..text_end).unwrap_or(&[]);
        let value = at + 2;
        let in_media = !session.media.is_empty() || session.media_dropped > 0;
        match line.get(..2) {
            Some(b"o=") => {
                // o=<username> <sess-id> <sess-version> IN <type> <address>
                let fields_before_net = line
                    .get(2..)
                    .unwrap_or(&[])
                    .split(|&b| b == b' ')
                    .filter(|f| !f.is_empty())
                    .take(3)
                    .last()
                    .map(|f| at + (f.as_ptr() as usize - line.as_ptr() as usize) + f.len());
                // Nothing is opened from o=, so an address we cannot read there (some
                // UAs bracket IPv6 ones: `IN IP6 [2001:db8::1]`) is no parse error; it
                // is only left alone (never rewritten behind NAT).
                session.origin =
                    fields_before_net.and_then(|p| parse_net_address(buf, p, text_end));
            }
            Some(b"c=") => match parse_net_address(buf, value, text_end) {
                Some(a) if in_media => {
                    if let Some(m) = session.media.last_mut()
                        && session.media_dropped == 0
                    {
                        m.connection = Some(a);
                    }
                }
                Some(a) => session.connection = Some(a),
                None => session.malformed += 1,
            },
            Some(b"m=") => match parse_media(buf, value, text_end) {
                Some(m) => {
                    if session.media.push(m).is_err() {
                        session.media_dropped = session.media_dropped.saturating_add(1);
                    }
                }
                None => session.malformed += 1,
            },
            Some(b"a=") => {
                let attr = line.get(2..).unwrap_or(&[]);
                if let Some(rest) = attr.strip_prefix(b"rtcp:") {
                    let p = value + 5;
                    match parse_port(buf, p, text_end) {
                        Some(rtcp)
                            if rest.len() == rtcp.1.len()
                                || rest.get(rtcp.1.len()) == Some(&b' ') =>
                        {
                            if let Some(m) = session.media.last_mut()
                                && session.media_dropped == 0
                            {
                                m.rtcp = Some(rtcp);
                            }
                        }
                        _ => session.malformed += 1,
                    }
                } else if let Some(d) = direction(attr) {
                    if in_media {
                        if let Some(m) = session.media.last_mut()
                            && session.media_dropped == 0
                        {
                            m.direction = d;
                        }
                    } else {
                        session.direction = Some(d);
                    }
                }
            }
            _ => {}
        }
        at = next;
    }
    // Session-level direction applies to media without their own.
    if let Some(d) = session.direction {
        for m in session.media.iter_mut() {
            if m.direction == Direction::SendRecv {
                m.direction = d;
            }
        }
    }
    session
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(s: &[u8]) -> Session {
        parse(s, 0..s.len())
    }

    const OFFER: &[u8] = b"v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.2\r\n\
s=-\r\n\
c=IN IP4 192.0.2.2\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=video 51372 RTP/AVP 31\r\n\
c=IN IP4 192.0.2.3\r\n\
a=rtcp:53020\r\n\
m=image 0 udptl t38\r\n";

    #[test]
    fn an_offer_with_session_and_media_connections() {
        let s = parse_all(OFFER);
        assert_eq!(
            s.origin.as_ref().unwrap().addr,
            "192.0.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            &OFFER[s.origin.as_ref().unwrap().text.clone()],
            b"192.0.2.2"
        );
        assert_eq!(s.media.len(), 3);
        let (a, v, i) = (&s.media[0], &s.media[1], &s.media[2]);
        assert_eq!((a.kind, a.port), (MediaKind::Audio, 49170));
        assert_eq!(&OFFER[a.port_text.clone()], b"49170");
        assert_eq!(
            s.media_address(a).unwrap().addr,
            "192.0.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!((v.kind, v.port), (MediaKind::Video, 51372));
        assert_eq!(
            s.media_address(v).unwrap().addr,
            "192.0.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(v.rtcp.as_ref().map(|r| r.0), Some(53020));
        assert_eq!((i.kind, i.port), (MediaKind::Image, 0));
        assert_eq!(s.malformed, 0);
    }

    #[test]
    fn ipv6_multicast_and_hold() {
        let sdp = b"v=0\no=- 1 1 IN IP6 2001:db8::2\nc=IN IP6 2001:db8::2\nm=audio 5004/2 RTP/AVP 0\na=inactive\nm=audio 6000 RTP/AVP 0\nc=IN IP4 233.252.0.1/127\n";
        let s = parse_all(sdp);
        assert_eq!(
            s.connection.as_ref().unwrap().addr,
            "2001:db8::2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(s.media[0].port, 5004);
        assert_eq!(s.media[0].direction, Direction::Inactive);
        assert_eq!(
            s.media[1].connection.as_ref().unwrap().addr,
            "233.252.0.1".parse::<IpAddr>().unwrap()
        );
        // Hold: c=0.0.0.0 parses; the helper decides it opens nothing.
        let s = parse_all(b"c=IN IP4 0.0.0.0\nm=audio 4000 RTP/AVP 0\n");
        assert!(s.connection.as_ref().unwrap().addr.is_unspecified());
        // Session-level direction applies to media without their own.
        let s =
            parse_all(b"a=sendonly\nm=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\na=recvonly\n");
        assert_eq!(s.media[0].direction, Direction::SendOnly);
        assert_eq!(s.media[1].direction, Direction::RecvOnly);
    }

    #[test]
    fn malformed_lines_create_nothing() {
        let sdp = b"c=IN IP4 192.0.2.300\nc=IN IP6 192.0.2.1\nc=IN IP4 2001:db8::1\nc=XX IP4 192.0.2.1\nc=IN IP6 [2001:db8::1]\nm=audio 99999 RTP/AVP 0\nm=audio x RTP/AVP 0\nm=audio 4000\na=rtcp:x\n";
        let s = parse_all(sdp);
        assert_eq!(s.connection, None);
        assert!(s.media.is_empty());
        assert_eq!(s.malformed, 9);
    }

    /// o= opens nothing: an origin we cannot read (a bracketed IPv6 address, as in the
    /// corpus's sngrep-ipv6frag INVITE, or a short line) is no parse error, and the
    /// media are still read. A bracketed c= is malformed (the kernel does not read it).
    #[test]
    fn an_unreadable_origin_is_no_parse_error() {
        let s = parse_all(
            b"v=0\no=user1 1 2 IN IP6 [2001:db8::1]\nc=IN IP6 2001:db8::1\nm=audio 15062 RTP/AVP 0\n",
        );
        assert_eq!(s.origin, None);
        assert_eq!(s.malformed, 0);
        assert_eq!(s.media[0].port, 15062);
        assert_eq!(parse_all(b"o=short\n").malformed, 0);
    }

    #[test]
    fn only_the_given_body_range_is_read() {
        let mut buf = b"c=IN IP4 192.0.2.2\nm=audio 4000 RTP/AVP 0\n".to_vec();
        let body_end = buf.len();
        buf.extend_from_slice(b"m=audio 22 RTP/AVP 0\n");
        let s = parse(&buf, 0..body_end);
        assert_eq!(s.media.len(), 1);
        assert_eq!(s.media[0].port, 4000);
    }

    #[test]
    fn too_many_media_lines_are_counted() {
        let mut sdp = b"c=IN IP4 192.0.2.2\n".to_vec();
        for i in 0..MAX_MEDIA + 3 {
            sdp.extend_from_slice(
                format!("m=audio {} RTP/AVP 0\nc=IN IP4 192.0.2.9\n", 4000 + 2 * i).as_bytes(),
            );
        }
        let s = parse_all(&sdp);
        assert_eq!(s.media.len(), MAX_MEDIA);
        assert_eq!(s.media_dropped, 3);
        assert!(s.media.iter().all(|m| m.connection.is_some()));
    }

    #[test]
    fn arbitrary_prefixes_never_panic() {
        for n in 0..=OFFER.len() {
            let _ = parse(OFFER, 0..n);
            let _ = parse(OFFER, n..OFFER.len());
        }
        #[allow(clippy::reversed_empty_ranges)]
        let _ = parse(OFFER, 10..5);
        let _ = parse(OFFER, 0..OFFER.len() + 10);
    }
}
