//! Recognising and parsing FTP's announcements from one search table, as the kernel's
//! nf_conntrack_ftp `search[]`: PORT and EPRT from the client, 227 and 229 from the
//! server, each with a parser that validates strictly and says where the endpoint text is.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::helpers::{Plan, Policy};
use crate::model::{Conntrack, Direction};
use crate::wire::text;

use super::{EPSV_LEADING_DELIMITERS, EndpointText, HOST_PORT_NUMBERS, IPV4_OCTETS, announce};

/// What a recognised line announced, and where: `text` is the part of the line that
/// spells the endpoint, which a NAT rewrite replaces.
pub(super) struct Announce<'a> {
    /// None for 229, which announces a port on the sender's address.
    pub(super) addr: Option<IpAddr>,
    pub(super) port: u16,
    pub(super) text: &'a [u8],
    pub(super) spelling: EndpointText,
}

/// How a pattern must be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Follow {
    /// A command verb: a space (then the arguments) or the end of the line. A longer word
    /// ("PORTAL") is not the command; the bare verb is, with empty (malformed) arguments.
    Verb,
    /// A reply code whose pattern includes its space: the rest of the line as it is.
    Text,
}

/// One line the helper acts on, as the kernel's `search[dir][]` table in
/// nf_conntrack_ftp.c: matched case-insensitively at the start of a segment's first
/// line, in one direction; `parse` reads the arguments.
pub(super) struct Search {
    pub(super) pattern: &'static [u8],
    pub(super) dir: Direction,
    pub(super) follow: Follow,
    /// The element's name in refusals and logs.
    pub(super) what: &'static str,
    pub(super) parse: fn(&[u8]) -> Result<Announce<'_>, ()>,
}

/// Everything FTP parses: PORT and EPRT from the client, 227 and 229 from the server.
pub(super) const SEARCH: [Search; 4] = [
    Search {
        pattern: b"PORT",
        dir: Direction::Original,
        follow: Follow::Verb,
        what: "PORT",
        parse: parse_port_args,
    },
    Search {
        pattern: b"EPRT",
        dir: Direction::Original,
        follow: Follow::Verb,
        what: "EPRT",
        parse: parse_eprt_args,
    },
    Search {
        pattern: b"227 ",
        dir: Direction::Reply,
        follow: Follow::Text,
        what: "227",
        parse: parse_227,
    },
    Search {
        pattern: b"229 ",
        dir: Direction::Reply,
        follow: Follow::Text,
        what: "229",
        parse: parse_229,
    },
];

impl Search {
    /// The arguments, if `line` is this entry's line.
    pub(super) fn arguments<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        if !text::starts_with_ignore_case(line, self.pattern) {
            return None;
        }
        let after = line.get(self.pattern.len()..)?;
        match (self.follow, after.first()) {
            (Follow::Text, _) | (Follow::Verb, None) => Some(after),
            (Follow::Verb, Some(b' ')) => Some(text::skip_spaces(after)),
            (Follow::Verb, Some(_)) => None,
        }
    }
}

/// Parse the first line of a segment known to start at a line start (the kernel's
/// find_pattern at the segment's first byte). Later lines are not looked at.
pub(super) fn parse_first_line(
    dir: Direction,
    payload: &[u8],
    ct: &Conntrack,
    policy: Policy,
    plan: &mut Plan,
) {
    let Some((line, _)) = text::split_line(payload) else {
        // The line continues in a segment that will not start at a line start, so it
        // will never be parsed: if it is a command we act on, we are losing it.
        if looks_like_announcement(dir, payload) {
            plan.parse_error = true;
        }
        return;
    };
    let Some((search, args)) = SEARCH
        .iter()
        .filter(|s| s.dir == dir)
        .find_map(|s| Some((s, s.arguments(line)?)))
    else {
        return;
    };
    match (search.parse)(args) {
        Ok(ann) => announce(dir, payload, search.what, ann, ct, policy, plan),
        Err(()) => plan.parse_error = true,
    }
}

/// Does an unterminated line begin (or could it begin) with something we parse?
pub(super) fn looks_like_announcement(dir: Direction, partial: &[u8]) -> bool {
    SEARCH.iter().filter(|s| s.dir == dir).any(|s| {
        text::starts_with_ignore_case(partial, s.pattern)
            || (partial.len() < s.pattern.len()
                && text::starts_with_ignore_case(s.pattern, partial))
    })
}

/// Only trailing blanks may follow the arguments.
pub(super) fn only_blanks(rest: &[u8]) -> bool {
    text::skip_spaces(rest).is_empty()
}

/// PORT arguments "h1,h2,h3,h4,p1,p2" (RFC 959), each number 0..=255.
pub(super) fn parse_port_args(args: &[u8]) -> Result<Announce<'_>, ()> {
    let (n, used) = text::parse_u8_list::<HOST_PORT_NUMBERS>(args, b',').map_err(|_| ())?;
    if !only_blanks(args.get(used..).unwrap_or(&[])) {
        return Err(());
    }
    h_p(n, args.get(..used).ok_or(())?)
}

/// The announcement of six comma-separated numbers spelled `text`.
pub(super) fn h_p(n: [u8; HOST_PORT_NUMBERS], text: &[u8]) -> Result<Announce<'_>, ()> {
    let [a, b, c, d, p1, p2] = n;
    Ok(Announce {
        addr: Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
        port: u16::from_be_bytes([p1, p2]),
        text,
        spelling: EndpointText::Commas,
    })
}

/// 227 text after "227 ". RFC 1123 4.1.2.6: the parentheses are optional, so like the
/// kernel we scan for the first digit; if a '(' is present we start there, so a digit in
/// the text before it ("227 Entering Passive Mode 2 (...)") does not derail us.
pub(super) fn parse_227(rest: &[u8]) -> Result<Announce<'_>, ()> {
    let from = text::find_byte(rest, b'(').map_or(0, |p| p + 1);
    let tail = rest.get(from..).ok_or(())?;
    let start = tail.iter().position(u8::is_ascii_digit).ok_or(())?;
    let nums = tail.get(start..).ok_or(())?;
    let (n, used) = text::parse_u8_list::<HOST_PORT_NUMBERS>(nums, b',').map_err(|_| ())?;
    // A seventh number is not an address+port.
    if nums.get(used) == Some(&b',') {
        return Err(());
    }
    h_p(n, nums.get(..used).ok_or(())?)
}

/// EPRT's address families (RFC 2428: the IANA address family numbers).
pub(super) const EPRT_IPV4: u8 = b'1';
pub(super) const EPRT_IPV6: u8 = b'2';

/// A valid RFC 2428 delimiter: printable ASCII 33..=126, not a digit.
pub(super) fn is_delim(c: u8) -> bool {
    (33..=126).contains(&c) && !c.is_ascii_digit()
}

/// "<d>af<d>addr<d>port<d>" (RFC 2428). The address family must be 1 or 2; which family
/// the connection uses is checked by the caller (a mismatch is a third-party address).
/// The announcement's text runs from the first delimiter to the last.
pub(super) fn parse_eprt_args(args: &[u8]) -> Result<Announce<'_>, ()> {
    let (&d, rest) = args.split_first().ok_or(())?;
    if !is_delim(d) {
        return Err(());
    }
    let (&af, rest) = rest.split_first().ok_or(())?;
    let rest = rest.strip_prefix(&[d]).ok_or(())?;
    let addr_end = text::find_byte(rest, d).ok_or(())?;
    let addr_text = rest.get(..addr_end).ok_or(())?;
    let rest = rest.get(addr_end + 1..).ok_or(())?;
    let addr = match af {
        EPRT_IPV4 => {
            let (n, used) = text::parse_u8_list::<IPV4_OCTETS>(addr_text, b'.').map_err(|_| ())?;
            if used != addr_text.len() {
                return Err(());
            }
            IpAddr::V4(Ipv4Addr::from(n))
        }
        EPRT_IPV6 => {
            let s = core::str::from_utf8(addr_text).map_err(|_| ())?;
            IpAddr::V6(s.parse::<Ipv6Addr>().map_err(|_| ())?)
        }
        _ => return Err(()),
    };
    let (port, used) = text::parse_u16(rest).map_err(|_| ())?;
    let rest = rest.get(used..).ok_or(())?;
    let tail = rest.strip_prefix(&[d]).ok_or(())?;
    if !only_blanks(tail) {
        return Err(());
    }
    let spelled = args.len().checked_sub(tail.len()).ok_or(())?;
    Ok(Announce {
        addr: Some(addr),
        port,
        text: args.get(..spelled).ok_or(())?,
        spelling: EndpointText::Eprt { delim: d },
    })
}

/// 229 text after "229 ": "... (<d><d><d>port<d>)"; the announcement's text is the
/// port's digits.
pub(super) fn parse_229(rest: &[u8]) -> Result<Announce<'_>, ()> {
    let open = text::find_byte(rest, b'(').ok_or(())?;
    let inner = rest.get(open + 1..).ok_or(())?;
    let d = match inner {
        [a, b, c, ..] if a == b && b == c && is_delim(*a) => *a,
        _ => return Err(()),
    };
    let num = inner.get(EPSV_LEADING_DELIMITERS..).ok_or(())?;
    let (port, used) = text::parse_u16(num).map_err(|_| ())?;
    if num.get(used) != Some(&d) {
        return Err(());
    }
    Ok(Announce {
        addr: None,
        port,
        text: num.get(..used).ok_or(())?,
        spelling: EndpointText::Port,
    })
}
