//! SIP messages (RFC 3261 §7) as zero-copy views: the start line, the header section with
//! the headers the helper needs (found through one table that knows their compact
//! forms, as the kernel's nf_conntrack_sip `ct_sip_hdrs`), and the body as Content-Length
//! delimits it. Everything is a byte range into the caller's buffer, so a NAT rewrite
//! can replace exactly what was parsed.
//!
//! Lenient where real agents are (header names in any case, whitespace around the colon,
//! folded continuation lines, bare LF line ends); strict where a mistake would open
//! something (the start line must be SIP/2.0, Content-Length must be one decimal number
//! that fits the buffer, repeated Content-Length headers must agree).

use core::ops::Range;

/// Why bytes are not a SIP message we act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// More bytes are needed: the header section or the body is not complete yet (a
    /// stream message split across segments; for a datagram: a malformed one).
    Incomplete,
    /// The start line is neither a request line nor a status line of SIP/2.0.
    NotSip,
    /// A header line has no name or no colon.
    BadHeader,
    /// Content-Length is missing on a stream, not a number, too large, or given twice
    /// with different values.
    BadContentLength,
}

/// Longest header section we look through. Real messages are a few KiB; this bounds the
/// work a hostile datagram can cause.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest Content-Length accepted (a UDP datagram cannot carry more anyway).
pub const MAX_BODY_BYTES: u32 = 65_535;

/// How the message reached us: a datagram carries exactly one message and may omit
/// Content-Length (RFC 3261 §18.3: the body then runs to the datagram's end); on a
/// stream Content-Length is mandatory and delimits the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    Stream,
}

/// The methods the helper tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Update,
    Prack,
    Options,
    Other,
}

/// Method names, matched case-sensitively as RFC 3261 §7.1 says.
const METHODS: [(&[u8], Method); 8] = [
    (b"INVITE", Method::Invite),
    (b"ACK", Method::Ack),
    (b"BYE", Method::Bye),
    (b"CANCEL", Method::Cancel),
    (b"REGISTER", Method::Register),
    (b"UPDATE", Method::Update),
    (b"PRACK", Method::Prack),
    (b"OPTIONS", Method::Options),
];

impl Method {
    pub fn from_bytes(name: &[u8]) -> Method {
        METHODS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Method::Other, |(_, m)| *m)
    }
}

/// The start line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    Request { method: Method, uri: Range<usize> },
    Response { code: u16 },
}

/// The headers the helper reads. Everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    CallId,
    Contact,
    ContentLength,
    ContentType,
    CSeq,
    Expires,
    From,
    To,
    Via,
    Other,
}

/// Full names and compact forms (RFC 3261 §7.3.3), compared case-insensitively.
const HEADER_TABLE: [(&[u8], Option<u8>, Name); 9] = [
    (b"Call-ID", Some(b'i'), Name::CallId),
    (b"Contact", Some(b'm'), Name::Contact),
    (b"Content-Length", Some(b'l'), Name::ContentLength),
    (b"Content-Type", Some(b'c'), Name::ContentType),
    (b"CSeq", None, Name::CSeq),
    (b"Expires", None, Name::Expires),
    (b"From", Some(b'f'), Name::From),
    (b"To", Some(b't'), Name::To),
    (b"Via", Some(b'v'), Name::Via),
];

impl Name {
    pub fn from_bytes(name: &[u8]) -> Name {
        for (full, compact, n) in HEADER_TABLE {
            if name.eq_ignore_ascii_case(full) {
                return n;
            }
            if let (Some(c), [b]) = (compact, name)
                && b.eq_ignore_ascii_case(&c)
            {
                return n;
            }
        }
        Name::Other
    }
}

/// One header: its name and the range of its value (from the first non-blank byte
/// after the colon to the end of its last continuation line, without the line end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Name,
    pub value: Range<usize>,
}

/// A parsed message: ranges into `buf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    buf: &'a [u8],
    pub start: Start,
    /// From the first header line to the end of the blank line.
    headers: Range<usize>,
    pub body: Range<usize>,
}

/// The end of the line starting at `from`: (end of its text, start of the next line).
fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let rest = buf.get(from..)?;
    let lf = rest.iter().position(|&b| b == b'\n')?;
    let text_end = if lf > 0 && rest.get(lf - 1) == Some(&b'\r') {
        from + lf - 1
    } else {
        from + lf
    };
    Some((text_end, from + lf + 1))
}

fn is_lws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `bytes` without leading and trailing spaces, tabs, CRs and LFs (folded values).
pub fn trim(bytes: &[u8]) -> &[u8] {
    let ws = |b: &u8| is_lws(*b) || *b == b'\r' || *b == b'\n';
    let start = bytes.iter().position(|b| !ws(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    bytes.get(start..end).unwrap_or(&[])
}

/// The range of `part` (a subslice of `whole`) within `whole`.
pub fn range_of(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

const SIP_VERSION: &[u8] = b"SIP/2.0";

fn parse_start(line: &[u8], line_start: usize) -> Result<Start, Error> {
    if let Some(rest) = line.strip_prefix(SIP_VERSION) {
        // Status-Line: SIP-Version SP Status-Code SP Reason-Phrase
        let rest = rest.strip_prefix(b" ").ok_or(Error::NotSip)?;
        let code = rest.get(..3).ok_or(Error::NotSip)?;
        if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
            return Err(Error::NotSip);
        }
        let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return Err(Error::NotSip);
        }
        return Ok(Start::Response { code });
    }
    // Request-Line: Method SP Request-URI SP SIP-Version
    let sp1 = line.iter().position(|&b| b == b' ').ok_or(Error::NotSip)?;
    let method = &line[..sp1];
    if method.is_empty()
        || !method
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(b))
    {
        return Err(Error::NotSip);
    }
    let rest = &line[sp1 + 1..];
    let sp2 = rest.iter().position(|&b| b == b' ').ok_or(Error::NotSip)?;
    let uri = &rest[..sp2];
    if uri.is_empty() || &rest[sp2 + 1..] != SIP_VERSION {
        return Err(Error::NotSip);
    }
    let uri_start = line_start + sp1 + 1;
    Ok(Start::Request {
        method: Method::from_bytes(method),
        uri: uri_start..uri_start + uri.len(),
    })
}

impl<'a> Message<'a> {
    /// Parse the message at the start of `buf`. On a stream `buf` may hold more (the
    /// next message); [`Message::len`] says where this one ends.
    pub fn parse(buf: &'a [u8], framing: Framing) -> Result<Message<'a>, Error> {
        // RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives on streams).
        let first = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(Error::Incomplete)?;
        let (start_end, headers_start) = match line_end(buf, first) {
            Some(l) => l,
            None if buf.len() - first > MAX_HEADER_BYTES => return Err(Error::NotSip),
            // Not a single line yet: if what we have cannot begin a start line, say so.
            None => {
                let partial = &buf[first..];
                return if partial
                    .iter()
                    .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r')
                {
                    Err(Error::Incomplete)
                } else {
                    Err(Error::NotSip)
                };
            }
        };
        let start = parse_start(&buf[first..start_end], first)?;
        // The header section ends at the first empty line.
        let mut at = headers_start;
        let mut content_length: Option<u32> = None;
        let headers_end = loop {
            if at - headers_start > MAX_HEADER_BYTES {
                return Err(Error::BadHeader);
            }
            let (text_end, next) = line_end(buf, at).ok_or(Error::Incomplete)?;
            if text_end == at {
                break next;
            }
            at = next;
        };
        let msg = Message {
            buf,
            start,
            headers: headers_start..headers_end,
            body: headers_end..headers_end,
        };
        for h in msg.headers() {
            let h = h?;
            if h.name == Name::ContentLength {
                let text = trim(msg.bytes(&h.value));
                if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
                    return Err(Error::BadContentLength);
                }
                let n = text.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| *n <= MAX_BODY_BYTES)
                    .ok_or(Error::BadContentLength)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(Error::BadContentLength);
                }
                content_length = Some(n);
            }
        }
        let body_end = match (content_length, framing) {
            (Some(n), _) => headers_end + n as usize,
            (None, Framing::Datagram) => buf.len(),
            (None, Framing::Stream) => return Err(Error::BadContentLength),
        };
        if body_end > buf.len() {
            return Err(Error::Incomplete);
        }
        Ok(Message {
            body: headers_end..body_end,
            ..msg
        })
    }

    /// The whole buffer the ranges index.
    pub fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// Bytes of a range this message handed out (empty if it does not fit).
    pub fn bytes(&self, r: &Range<usize>) -> &'a [u8] {
        self.buf.get(r.clone()).unwrap_or(&[])
    }

    /// Where the message ends (header section and Content-Length body).
    pub fn len(&self) -> usize {
        self.body.end
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn method(&self) -> Option<Method> {
        match self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            Start::Response { code } => Some(code),
            Start::Request { .. } => None,
        }
    }

    /// The headers in order, continuation lines folded into their header's value.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            buf: self.buf,
            at: self.headers.start,
            end: self.headers.end,
        }
    }

    /// The first header called `name` (in any form).
    pub fn header(&self, name: Name) -> Option<Header> {
        self.headers().flatten().find(|h| h.name == name)
    }

    /// Every value of every header called `name`, split at top-level commas (RFC 3261
    /// §7.3.1), in order.
    pub fn values(&self, name: Name) -> impl Iterator<Item = Range<usize>> + 'a {
        let buf = self.buf;
        self.headers()
            .flatten()
            .filter(move |h| h.name == name)
            .flat_map(move |h| CommaValues {
                buf,
                at: h.value.start,
                end: h.value.end,
            })
    }
}

/// Iterator over the header lines of a message.
pub struct Headers<'a> {
    buf: &'a [u8],
    at: usize,
    end: usize,
}

impl Iterator for Headers<'_> {
    type Item = Result<Header, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let (text_end, mut next) = line_end(self.buf, self.at)?;
        if self.at >= self.end || text_end == self.at {
            return None;
        }
        let line = self.buf.get(self.at..text_end)?;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.at = self.end;
            return Some(Err(Error::BadHeader));
        };
        let name = trim(&line[..colon]);
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
            self.at = self.end;
            return Some(Err(Error::BadHeader));
        }
        // Continuation lines start with a space or a tab.
        let mut value_end = text_end;
        while let Some(&b) = self.buf.get(next)
            && is_lws(b)
            && next < self.end
        {
            let Some((e, n)) = line_end(self.buf, next) else {
                break;
            };
            value_end = e;
            next = n;
        }
        let mut value_start = self.at + colon + 1;
        while value_start < value_end
            && self
                .buf
                .get(value_start)
                .is_some_and(|&b| is_lws(b) || b == b'\r' || b == b'\n')
        {
            value_start += 1;
        }
        self.at = next;
        Some(Ok(Header {
            name: Name::from_bytes(name),
            value: value_start..value_end,
        }))
    }
}

/// Values of one header split at commas outside quoted strings and <...>.
struct CommaValues<'a> {
    buf: &'a [u8],
    at: usize,
    end: usize,
}

impl Iterator for CommaValues<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        while self.at < self.end {
            let start = self.at;
            let (mut quoted, mut angle, mut escaped) = (false, false, false);
            let mut i = start;
            while i < self.end {
                let b = *self.buf.get(i)?;
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b'<' if !quoted => angle = true,
                    b'>' if !quoted => angle = false,
                    b',' if !quoted && !angle => break,
                    _ => {}
                }
                i += 1;
            }
            self.at = i + 1;
            let part = trim(self.buf.get(start..i)?);
            if !part.is_empty() {
                return Some(range_of(self.buf, part));
            }
        }
        None
    }
}

/// CSeq: sequence number and method.
pub fn parse_cseq(value: &[u8]) -> Option<(u32, Method)> {
    let v = trim(value);
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 10 {
        return None;
    }
    let n = v[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let n = u32::try_from(n).ok()?;
    let method = trim(&v[digits..]);
    if method.is_empty()
        || !v
            .get(digits)
            .is_some_and(|&b| is_lws(b) || b == b'\r' || b == b'\n')
    {
        return None;
    }
    Some((n, Method::from_bytes(method)))
}

/// A delta-seconds value (Expires header or parameter).
pub fn parse_seconds(value: &[u8]) -> Option<u32> {
    let v = trim(value);
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@198.51.100.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@198.51.100.2>\r\n\
From: Alice <sip:alice@192.0.2.2>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@192.0.2.2\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.2:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn text<'a>(m: &Message<'a>, r: &Range<usize>) -> &'a str {
        core::str::from_utf8(m.bytes(r)).unwrap()
    }

    #[test]
    fn a_request_with_its_headers_and_body() {
        let m = Message::parse(INVITE, Framing::Datagram).unwrap();
        let Start::Request { method, uri } = &m.start else {
            panic!("a request");
        };
        assert_eq!(*method, Method::Invite);
        assert_eq!(text(&m, uri), "sip:bob@198.51.100.2");
        assert_eq!(m.bytes(&m.body), b"v=0\n");
        assert_eq!(m.len(), INVITE.len());
        let cseq = m.header(Name::CSeq).unwrap();
        assert_eq!(
            parse_cseq(m.bytes(&cseq.value)),
            Some((314159, Method::Invite))
        );
        let via = m.header(Name::Via).unwrap();
        assert_eq!(
            text(&m, &via.value),
            "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK776asdhds"
        );
        assert_eq!(
            text(&m, &m.header(Name::CallId).unwrap().value),
            "a84b4c76e66710@192.0.2.2"
        );
    }

    #[test]
    fn status_lines() {
        let m = Message::parse(
            b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n",
            Framing::Stream,
        )
        .unwrap();
        assert_eq!(m.status(), Some(180));
        let m = Message::parse(b"SIP/2.0 200\r\nl:0\r\n\r\n", Framing::Stream).unwrap();
        assert_eq!(m.status(), Some(200), "empty reason phrase");
        for bad in [
            &b"SIP/2.0 99 Low\r\n\r\n"[..],
            b"SIP/2.0 700 High\r\n\r\n",
            b"SIP/2.0 2000 Long\r\n\r\n",
            b"SIP/3.0 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"SIP/2.0 20x OK\r\n\r\n",
        ] {
            assert_eq!(
                Message::parse(bad, Framing::Datagram).unwrap_err(),
                Error::NotSip,
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn request_lines_must_name_sip_2_0() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"INVITE sip:a@b SIP/1.0\r\n\r\n",
            b"INVITE  sip:a@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b\r\n\r\n",
            b"\x00\x01\x02 x SIP/2.0\r\n\r\n",
        ] {
            assert_eq!(
                Message::parse(bad, Framing::Datagram).unwrap_err(),
                Error::NotSip
            );
        }
        let m = Message::parse(b"NEWMETHOD sip:a@b SIP/2.0\r\n\r\n", Framing::Datagram).unwrap();
        assert_eq!(m.method(), Some(Method::Other));
    }

    #[test]
    fn compact_forms_case_and_whitespace_before_the_colon() {
        let msg = b"BYE sip:a@192.0.2.9 SIP/2.0\r\n\
v: SIP/2.0/TCP 192.0.2.2\r\n\
i : abc\r\n\
CONTENT-length   : 0\r\n\
m: <sip:a@192.0.2.2>\r\n\
f: <sip:x@y>;tag=1\r\n\
T: <sip:z@w>\r\n\
cseq: 2 BYE\r\n\
\r\n";
        let m = Message::parse(msg, Framing::Stream).unwrap();
        assert_eq!(m.method(), Some(Method::Bye));
        assert_eq!(
            text(&m, &m.header(Name::Via).unwrap().value),
            "SIP/2.0/TCP 192.0.2.2"
        );
        assert_eq!(text(&m, &m.header(Name::CallId).unwrap().value), "abc");
        assert!(m.header(Name::Contact).is_some());
        assert!(m.header(Name::From).is_some());
        assert!(m.header(Name::To).is_some());
        assert!(m.body.is_empty());
        assert_eq!(Name::from_bytes(b"s"), Name::Other, "Subject is not ours");
        assert_eq!(Name::from_bytes(b"Via-Extra"), Name::Other);
    }

    #[test]
    fn continuation_lines_fold_into_the_value_and_commas_split_values() {
        let msg = b"REGISTER sip:192.0.2.1 SIP/2.0\r\n\
Contact: <sip:a@192.0.2.2:5060>;expires=60,\r\n \"Bob, Jr\" <sip:b@192.0.2.2:5062>\r\n\
Via: SIP/2.0/UDP 192.0.2.2;branch=1\r\n\
Via: SIP/2.0/UDP 192.0.2.3;branch=2, SIP/2.0/UDP 192.0.2.4\r\n\
Content-Length: 0\r\n\
\r\n";
        let m = Message::parse(msg, Framing::Datagram).unwrap();
        let contacts: Vec<_> = m.values(Name::Contact).map(|r| text(&m, &r)).collect();
        assert_eq!(
            contacts,
            vec![
                "<sip:a@192.0.2.2:5060>;expires=60",
                "\"Bob, Jr\" <sip:b@192.0.2.2:5062>"
            ]
        );
        let vias: Vec<_> = m.values(Name::Via).map(|r| text(&m, &r)).collect();
        assert_eq!(
            vias,
            vec![
                "SIP/2.0/UDP 192.0.2.2;branch=1",
                "SIP/2.0/UDP 192.0.2.3;branch=2",
                "SIP/2.0/UDP 192.0.2.4"
            ]
        );
    }

    #[test]
    fn content_length_delimits_the_body() {
        // Bytes past Content-Length are not this message's body.
        let msg = b"SIP/2.0 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        let m = Message::parse(msg, Framing::Datagram).unwrap();
        assert_eq!(m.bytes(&m.body), b"abc");
        assert_eq!(m.len(), msg.len() - 3);
        // Without one, a datagram's body runs to its end; a stream needs one.
        let msg = b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\nabc";
        assert_eq!(
            Message::parse(msg, Framing::Datagram)
                .unwrap()
                .bytes(&Range {
                    start: msg.len() - 3,
                    end: msg.len()
                }),
            b"abc"
        );
        assert_eq!(
            Message::parse(msg, Framing::Stream).unwrap_err(),
            Error::BadContentLength
        );
        // A body longer than what is there: more is needed.
        let msg = b"SIP/2.0 200 OK\r\nl: 10\r\n\r\nabc";
        assert_eq!(
            Message::parse(msg, Framing::Stream).unwrap_err(),
            Error::Incomplete
        );
    }

    #[test]
    fn bad_or_conflicting_content_lengths_are_refused() {
        for cl in [
            &b"-1"[..],
            b"",
            b"1e3",
            b"99999999999999999999",
            b"70000",
            b"0x10",
        ] {
            let mut msg = b"SIP/2.0 200 OK\r\nContent-Length: ".to_vec();
            msg.extend_from_slice(cl);
            msg.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                Message::parse(&msg, Framing::Datagram).unwrap_err(),
                Error::BadContentLength,
                "{cl:?}"
            );
        }
        let msg = b"SIP/2.0 200 OK\r\nl: 0\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(
            Message::parse(msg, Framing::Datagram).unwrap_err(),
            Error::BadContentLength
        );
        let msg = b"SIP/2.0 200 OK\r\nl: 2\r\nContent-Length:2\r\n\r\nab";
        assert!(Message::parse(msg, Framing::Datagram).is_ok(), "agreeing");
    }

    #[test]
    fn incomplete_messages_and_keepalives() {
        assert_eq!(
            Message::parse(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n", Framing::Stream).unwrap_err(),
            Error::Incomplete
        );
        assert_eq!(
            Message::parse(b"INVITE sip:a@b SI", Framing::Stream).unwrap_err(),
            Error::Incomplete
        );
        assert_eq!(
            Message::parse(b"\r\n\r\n", Framing::Stream).unwrap_err(),
            Error::Incomplete
        );
        // Keep-alive CRLFs before a message are skipped.
        let m = Message::parse(b"\r\n\r\nSIP/2.0 200 OK\r\nl:0\r\n\r\n", Framing::Stream).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.len(), 4 + 23);
    }

    #[test]
    fn two_messages_in_one_stream_buffer() {
        let mut buf = b"SIP/2.0 100 Trying\r\nl: 0\r\n\r\n".to_vec();
        let first = buf.len();
        buf.extend_from_slice(b"SIP/2.0 180 Ringing\r\nl: 2\r\n\r\nxy");
        let m = Message::parse(&buf, Framing::Stream).unwrap();
        assert_eq!((m.status(), m.len()), (Some(100), first));
        let m2 = Message::parse(&buf[first..], Framing::Stream).unwrap();
        assert_eq!(m2.status(), Some(180));
        assert_eq!(first + m2.len(), buf.len());
    }

    #[test]
    fn header_lines_without_a_colon_or_name_are_errors() {
        for bad in [
            &b"SIP/2.0 200 OK\r\nnocolon\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\n: empty name\r\n\r\n",
        ] {
            assert_eq!(
                Message::parse(bad, Framing::Datagram).unwrap_err(),
                Error::BadHeader
            );
        }
    }

    #[test]
    fn bare_line_feeds_are_line_ends() {
        let m = Message::parse(
            b"SIP/2.0 200 OK\nCSeq: 7 REGISTER\nl: 0\n\n",
            Framing::Stream,
        )
        .unwrap();
        assert_eq!(
            parse_cseq(m.bytes(&m.header(Name::CSeq).unwrap().value)),
            Some((7, Method::Register))
        );
    }

    #[test]
    fn cseq_and_seconds() {
        assert_eq!(parse_cseq(b"0009\r\n  INVITE"), Some((9, Method::Invite)));
        assert_eq!(parse_cseq(b"1 PRACK"), Some((1, Method::Prack)));
        assert_eq!(parse_cseq(b"INVITE"), None);
        assert_eq!(parse_cseq(b"1INVITE"), None);
        assert_eq!(parse_cseq(b"99999999999 INVITE"), None);
        assert_eq!(parse_cseq(b"5"), None);
        assert_eq!(parse_seconds(b" 3600 "), Some(3600));
        assert_eq!(parse_seconds(b"9999999999"), Some(u32::MAX));
        assert_eq!(parse_seconds(b"-1"), None);
        assert_eq!(parse_seconds(b""), None);
    }

    #[test]
    fn torture_test_wsinv_parses() {
        // RFC 4475 3.1.1.1 (abridged): whitespace everywhere, folded values.
        let msg = b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n\
TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n\
Call-ID: wsinv.ndaksdj@192.0.2.1\r\n\
Content-Length   : 4\r\n\
cseq: 0009\r\n  INVITE\r\n\
Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\
s :\r\n\
\r\n\
v=0\n";
        let m = Message::parse(msg, Framing::Datagram).unwrap();
        assert_eq!(
            parse_cseq(m.bytes(&m.header(Name::CSeq).unwrap().value)),
            Some((9, Method::Invite))
        );
        assert_eq!(m.bytes(&m.body), b"v=0\n");
        let to = m.header(Name::To).unwrap();
        assert!(text(&m, &to.value).starts_with("sip:vivekg@"));
    }

    #[test]
    fn arbitrary_prefixes_never_panic() {
        for n in 0..=INVITE.len() {
            let _ = Message::parse(&INVITE[..n], Framing::Stream);
            let _ = Message::parse(&INVITE[..n], Framing::Datagram);
        }
    }
}
