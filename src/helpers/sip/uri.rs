//! The parts of SIP header values that carry endpoints: SIP URIs (RFC 3261 §19.1),
//! name-addr / addr-spec with header parameters (Contact, From, To), and Via sent-by
//! (§20.42). Ranges index the message buffer, as in `message`.
//!
//! Only IP literals matter to a helper: a host name never becomes an expectation, so it
//! is recognised (to keep parsing) but yields no address.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ops::Range;

use super::message::{range_of, trim};

/// A host and optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The address when the host is an IP literal.
    pub addr: Option<IpAddr>,
    /// The host as written (an IPv6 literal with its brackets).
    pub host: Range<usize>,
    pub port: Option<u16>,
    /// The port digits as written.
    pub port_text: Option<Range<usize>>,
    /// Where the host[:port] ends.
    pub end: usize,
}

/// URI schemes the helper tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Other,
}

/// A sip: or sips: URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    pub host: HostPort,
    /// `;params` after the host[:port] (possibly empty).
    pub params: Range<usize>,
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// Parse `host[:port]` at `buf[at..end]`.
pub fn parse_host_port(buf: &[u8], at: usize, end: usize) -> Option<HostPort> {
    let s = buf.get(at..end)?;
    let (addr, host_len) = if s.first() == Some(&b'[') {
        let close = s.iter().position(|&b| b == b']')?;
        let inner = core::str::from_utf8(s.get(1..close)?).ok()?;
        (Some(IpAddr::V6(inner.parse::<Ipv6Addr>().ok()?)), close + 1)
    } else {
        let len = s.iter().take_while(|&&b| is_host_char(b)).count();
        if len == 0 {
            return None;
        }
        let text = core::str::from_utf8(s.get(..len)?).ok()?;
        let looks_numeric = text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let addr = match text.parse::<Ipv4Addr>() {
            Ok(a) => Some(IpAddr::V4(a)),
            // "1.2.3.256", "01.2.3.4": not an address, and not a name either.
            Err(_) if looks_numeric => return None,
            Err(_) => None,
        };
        (addr, len)
    };
    let mut host_port = HostPort {
        addr,
        host: at..at + host_len,
        port: None,
        port_text: None,
        end: at + host_len,
    };
    if s.get(host_len) == Some(&b':') {
        let digits = s
            .get(host_len + 1..)?
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let text = s.get(host_len + 1..host_len + 1 + digits)?;
        let port = text.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        host_port.port = Some(u16::try_from(port).ok().filter(|p| *p != 0)?);
        let start = at + host_len + 1;
        host_port.port_text = Some(start..start + digits);
        host_port.end = start + digits;
    }
    Some(host_port)
}

/// Parse a URI at `buf[r]` (the whole range is the URI, e.g. a Request-URI or what was
/// inside <...>).
pub fn parse_uri(buf: &[u8], r: Range<usize>) -> Option<Uri> {
    let s = buf.get(r.clone())?;
    let colon = s.iter().position(|&b| b == b':')?;
    let scheme = match s.get(..colon)? {
        x if x.eq_ignore_ascii_case(b"sip") => Scheme::Sip,
        x if x.eq_ignore_ascii_case(b"sips") => Scheme::Sips,
        _ => Scheme::Other,
    };
    if scheme == Scheme::Other {
        return Some(Uri {
            scheme,
            host: HostPort {
                addr: None,
                host: r.start..r.start,
                port: None,
                port_text: None,
                end: r.start,
            },
            params: r.end..r.end,
        });
    }
    let after_scheme = colon + 1;
    // userinfo ends at the last '@' before any ';' or '?' (a user part may contain ';').
    let rest = s.get(after_scheme..)?;
    let host_from = match rest.iter().position(|&b| b == b'@') {
        Some(p) => after_scheme + p + 1,
        None => after_scheme,
    };
    let host = parse_host_port(buf, r.start + host_from, r.end)?;
    let params_end = buf
        .get(host.end..r.end)?
        .iter()
        .position(|&b| b == b'?')
        .map_or(r.end, |p| host.end + p);
    match buf.get(host.end) {
        None | Some(b';') | Some(b'?') => {}
        Some(_) if host.end == r.end => {}
        Some(_) => return None,
    }
    Some(Uri {
        scheme,
        params: host.end..params_end,
        host,
    })
}

/// A Contact/From/To value: the URI's range and the header parameters after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub uri: Range<usize>,
    pub params: Range<usize>,
}

/// Split a name-addr (`["display"] <uri> ;params`) or addr-spec (`uri ;params`, where
/// the parameters belong to the header, RFC 3261 §20) at `buf[r]`.
pub fn parse_address(buf: &[u8], r: Range<usize>) -> Option<Address> {
    let s = buf.get(r.clone())?;
    // A '<' outside a quoted display name opens the URI.
    let mut quoted = false;
    let mut escaped = false;
    let mut open = None;
    for (i, &b) in s.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => {
                open = Some(i);
                break;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    match open {
        Some(o) => {
            let close = o + s.get(o..)?.iter().position(|&b| b == b'>')?;
            let uri = trim(s.get(o + 1..close)?);
            Some(Address {
                uri: range_of(buf, uri),
                params: r.start + close + 1..r.end,
            })
        }
        None => {
            let t = trim(s);
            let semi = t.iter().position(|&b| b == b';').unwrap_or(t.len());
            let uri = trim(t.get(..semi)?);
            let start = range_of(buf, t).start;
            Some(Address {
                uri: range_of(buf, uri),
                params: start + semi..start + t.len(),
            })
        }
    }
}

/// The value of `;name=value` (or `;name` alone: an empty range) among `buf[params]`,
/// names compared case-insensitively, whitespace around `=` allowed.
pub fn param(buf: &[u8], params: Range<usize>, name: &[u8]) -> Option<Range<usize>> {
    let s = buf.get(params.clone())?;
    let mut at = 0;
    while at < s.len() {
        let end = s
            .get(at..)?
            .iter()
            .position(|&b| b == b';')
            .map_or(s.len(), |p| at + p);
        let part = s.get(at..end)?;
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (trim(part.get(..eq)?), Some(trim(part.get(eq + 1..)?))),
            None => (trim(part), None),
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(match value {
                Some(v) => range_of(buf, v),
                None => {
                    let p = params.start + end;
                    p..p
                }
            });
        }
        at = end + 1;
    }
    None
}

/// One Via value: `SIP / 2.0 / transport sent-by ;params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    pub transport: Range<usize>,
    pub sent_by: HostPort,
    pub params: Range<usize>,
}

/// Parse one Via value at `buf[r]` (linear whitespace allowed around the slashes).
pub fn parse_via(buf: &[u8], r: Range<usize>) -> Option<Via> {
    let s = buf.get(r.clone())?;
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while s.get(*i).is_some_and(ws) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> Option<Range<usize>> {
        let start = *i;
        while s.get(*i).is_some_and(|b| !ws(b) && *b != b'/') {
            *i += 1;
        }
        (*i > start).then(|| r.start + start..r.start + *i)
    };
    let name = token(&mut i)?;
    skip_ws(&mut i);
    if !buf.get(name)?.eq_ignore_ascii_case(b"SIP") || s.get(i) != Some(&b'/') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    let version = token(&mut i)?;
    skip_ws(&mut i);
    if buf.get(version)? != b"2.0" || s.get(i) != Some(&b'/') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    let transport = token(&mut i)?;
    skip_ws(&mut i);
    let sent_by = parse_host_port(buf, r.start + i, r.end)?;
    let params_start = sent_by.end;
    Some(Via {
        transport,
        params: params_start..r.end,
        sent_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &[u8]) -> Range<usize> {
        0..s.len()
    }

    #[test]
    fn host_ports() {
        let s = b"192.0.2.2:5060;x";
        let hp = parse_host_port(s, 0, s.len()).unwrap();
        assert_eq!(hp.addr, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(
            (hp.port, hp.port_text.clone(), hp.end),
            (Some(5060), Some(10..14), 14)
        );
        let s = b"[2001:db8::1]:5062";
        let hp = parse_host_port(s, 0, s.len()).unwrap();
        assert_eq!(hp.addr, Some("2001:db8::1".parse().unwrap()));
        assert_eq!((hp.host.clone(), hp.port), (0..13, Some(5062)));
        let s = b"pbx.example.com";
        let hp = parse_host_port(s, 0, s.len()).unwrap();
        assert_eq!((hp.addr, hp.port), (None, None));
        for bad in [
            &b"192.0.2.256"[..],
            b"01.2.3.4",
            b"[2001:db8::1",
            b"[nonsense]",
            b"192.0.2.1:",
            b"192.0.2.1:0",
            b"192.0.2.1:65536",
            b"192.0.2.1:123456",
            b"",
        ] {
            assert_eq!(parse_host_port(bad, 0, bad.len()), None, "{bad:?}");
        }
    }

    #[test]
    fn uris() {
        let s = b"sip:alice@192.0.2.2:5070;transport=tcp?subject=x";
        let u = parse_uri(s, whole(s)).unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.host.addr, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(u.host.port, Some(5070));
        assert_eq!(&s[u.params.clone()], b";transport=tcp");
        let s = b"SIPS:[2001:db8::5]";
        let u = parse_uri(s, whole(s)).unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.host.addr, Some("2001:db8::5".parse().unwrap()));
        let s = b"tel:+1-555-0100";
        assert_eq!(parse_uri(s, whole(s)).unwrap().scheme, Scheme::Other);
        // A user part with ';' and a host name.
        let s = b"sip:user;x=y@example.com";
        let u = parse_uri(s, whole(s)).unwrap();
        assert_eq!(u.host.addr, None);
        assert_eq!(&s[u.host.host.clone()], b"example.com");
        // Not an address: a (bad) name, which opens nothing.
        let s = b"sip:a@192.0.2.2junk";
        assert_eq!(parse_uri(s, whole(s)).unwrap().host.addr, None);
        let s = b"sip:a@192.0.2.2:5060junk";
        assert_eq!(parse_uri(s, whole(s)), None);
    }

    #[test]
    fn addresses_and_parameters() {
        let s = b"\"Bob <x>, Jr\" <sip:b@192.0.2.2:5062>;expires=60;q=0.5";
        let a = parse_address(s, whole(s)).unwrap();
        assert_eq!(&s[a.uri.clone()], b"sip:b@192.0.2.2:5062");
        assert_eq!(&s[param(s, a.params.clone(), b"EXPIRES").unwrap()], b"60");
        assert_eq!(&s[param(s, a.params.clone(), b"q").unwrap()], b"0.5");
        assert_eq!(param(s, a.params.clone(), b"tag"), None);
        // addr-spec: parameters belong to the header.
        let s = b"sip:a@192.0.2.2 ; tag = 12 ; lr";
        let a = parse_address(s, whole(s)).unwrap();
        assert_eq!(&s[a.uri.clone()], b"sip:a@192.0.2.2");
        assert_eq!(&s[param(s, a.params.clone(), b"tag").unwrap()], b"12");
        assert!(param(s, a.params.clone(), b"lr").unwrap().is_empty());
        // Unbalanced quotes or no closing '>'.
        assert_eq!(parse_address(b"\"x <sip:a@b>", 0..12), None);
        assert_eq!(parse_address(b"<sip:a@b", 0..8), None);
    }

    #[test]
    fn vias() {
        let s = b"SIP/2.0/UDP 192.0.2.2:5060;branch=z9;rport;received=203.0.113.1";
        let v = parse_via(s, whole(s)).unwrap();
        assert_eq!(&s[v.transport.clone()], b"UDP");
        assert_eq!(v.sent_by.addr, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(v.sent_by.port, Some(5060));
        assert_eq!(
            &s[param(s, v.params.clone(), b"received").unwrap()],
            b"203.0.113.1"
        );
        assert!(param(s, v.params.clone(), b"rport").unwrap().is_empty());
        let s = b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw";
        let v = parse_via(s, whole(s)).unwrap();
        assert_eq!(v.sent_by.addr, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(v.sent_by.port, None);
        for bad in [
            &b"SIP/3.0/UDP 192.0.2.2"[..],
            b"HTTP/2.0/UDP x",
            b"SIP/2.0/UDP",
            b"",
        ] {
            assert_eq!(parse_via(bad, whole(bad)), None, "{bad:?}");
        }
    }
}
