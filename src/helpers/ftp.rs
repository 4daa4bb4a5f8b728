//! FTP helper (RFC 959 PORT/227, RFC 2428 EPRT/229), modelled on the kernel's
//! net/netfilter/nf_conntrack_ftp.c.
//!
//! What carries over from the kernel, and where we deliberately differ:
//! - Only data that starts at a line start is parsed. Per direction the private data keeps
//!   the two most recent TCP sequence numbers that followed a '\n' (the kernel's
//!   `seq_aft_nl`), and a segment is parsed only if its sequence number is one of them.
//! - Commands are matched case-insensitively ("port" works, as with strncasecmp).
//! - The announced address must be the sender's own address in its direction's tuple
//!   (the kernel's default `loose=0`): no expectations towards third parties.
//! - The kernel looks only at the first line of a segment; we look at every complete line
//!   of a segment that starts at a line start, which catches pipelined commands. In
//!   replies we skip the body of multi-line replies ("ddd-" ... "ddd "), which the kernel
//!   never needs to because it never looks past the first line; this keeps a server that
//!   echoes client-chosen text inside a multi-line reply from being used to forge a 227.
//! - Arguments are validated strictly (each PORT/227 number <= 255, ports 1..=65535,
//!   exactly six numbers); the kernel only gained the <= 255 check in 2026.
//! - The kernel drops a packet whose command it recognises but cannot parse ("partial
//!   match"), to force a retransmission; a helper here never drops, it reports
//!   `parse_error` and still records the line start so later commands are seen.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::conntrack::{Conntrack, Direction, ExpectNat, Expectation, IPPROTO_TCP, status};
use crate::helpers::{
    Action, EndpointText, Helper, Packet, Refusal, RefusalReason, Rewrite, Transport,
};
use crate::wire::text;

/// Well-known FTP control port.
pub const PORT: u16 = 21;

/// Bytes of private data registered with the kernel. Fixed at 32 (the maximum) so later
/// layouts can grow without a registration change, which the kernel refuses with EBUSY
/// while conntracks use the helper.
pub const PRIVATE_LEN: usize = 32;
const _: () = assert!(PRIVATE_LEN <= crate::helpers::PRIVATE_DATA_MAX);

/// Layout version stored in byte 0. 0 means "never written" (a fresh conntrack).
pub const LAYOUT_VERSION: u8 = 1;

/// How many line-start sequence numbers are kept per direction (the kernel's
/// NUM_SEQ_TO_REMEMBER). Two cover a retransmission of the last line alongside the next.
pub const SEQS_PER_DIR: usize = 2;

/// Expectation class (policy index) FTP data connections count against.
pub const EXPECT_CLASS: u32 = 0;

/// Private-data layout, version 1 (all integers big-endian):
///
/// | offset | size | field                                                          |
/// |--------|------|----------------------------------------------------------------|
/// | 0      | 1    | layout version (1); 0 = fresh                                  |
/// | 1      | 1    | number of valid line-start seqs, Original direction (0..=2)    |
/// | 2      | 1    | same for Reply                                                 |
/// | 3      | 1    | flags: bit 0/1 = pick up next segment in Original/Reply        |
/// | 4      | 8    | Original line-start seqs [2 x u32]                             |
/// | 12     | 8    | Reply line-start seqs [2 x u32]                                |
/// | 20     | 12   | reserved, zero                                                 |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    count: [u8; 2],
    seqs: [[u32; SEQS_PER_DIR]; 2],
    /// The kernel's NF_CT_FTP_SEQ_PICKUP: parse the next segment in that direction even
    /// though its position is unknown. Only set for connections adopted mid-stream.
    pickup: [bool; 2],
}

mod off {
    pub const VERSION: usize = 0;
    pub const COUNT: usize = 1;
    pub const FLAGS: usize = 3;
    pub const SEQS: usize = 4;
}

impl State {
    /// State for a connection whose history is unknown (e.g. adopted after a failover):
    /// the next segment in each direction is parsed as if it started a line, like the
    /// kernel does for conntracks injected from user space.
    pub fn picked_up() -> State {
        State {
            pickup: [true, true],
            ..State::default()
        }
    }

    /// Decode private data. Anything that is not a well-formed version-1 layout (short
    /// buffer, unknown version, impossible counts) is treated as a fresh connection:
    /// losing line tracking costs at most one missed command, misreading it could cost more.
    pub fn decode(private: &[u8]) -> State {
        let Some(buf) = private.get(..PRIVATE_LEN) else {
            return State::default();
        };
        if crate::wire::byte(buf, off::VERSION) != LAYOUT_VERSION {
            return State::default();
        }
        let mut st = State::default();
        for d in 0..2 {
            let n = crate::wire::byte(buf, off::COUNT + d);
            if usize::from(n) > SEQS_PER_DIR {
                return State::default();
            }
            st.count[d] = n;
            for (i, slot) in st.seqs[d].iter_mut().enumerate() {
                if i < usize::from(n) {
                    *slot = crate::wire::be32(buf, off::SEQS + (d * SEQS_PER_DIR + i) * 4);
                }
            }
        }
        let flags = crate::wire::byte(buf, off::FLAGS);
        st.pickup = [flags & 1 != 0, flags & 2 != 0];
        st
    }

    /// Encode into `private` (which must hold `PRIVATE_LEN` bytes; shorter buffers are
    /// left untouched). Returns whether any byte changed.
    pub fn encode(&self, private: &mut [u8]) -> bool {
        let Some(buf) = private.get_mut(..PRIVATE_LEN) else {
            return false;
        };
        let mut out = [0u8; PRIVATE_LEN];
        out[off::VERSION] = LAYOUT_VERSION;
        for d in 0..2 {
            out[off::COUNT + d] = self.count[d];
            for (i, seq) in self.seqs[d].iter().enumerate() {
                if i < usize::from(self.count[d]) {
                    crate::wire::set_be32(&mut out, off::SEQS + (d * SEQS_PER_DIR + i) * 4, *seq);
                }
            }
        }
        out[off::FLAGS] = u8::from(self.pickup[0]) | (u8::from(self.pickup[1]) << 1);
        if buf == out.as_slice() {
            return false;
        }
        buf.copy_from_slice(&out);
        true
    }

    fn valid(&self, dir: Direction) -> &[u32] {
        let d = dir.index();
        let n = usize::from(self.count[d]).min(SEQS_PER_DIR);
        self.seqs[d].get(..n).unwrap_or(&[])
    }

    /// Is `seq` a recorded line start in `dir`?
    pub fn at_line_start(&self, dir: Direction, seq: u32) -> bool {
        self.valid(dir).contains(&seq)
    }

    /// Remember that a line starts at `seq` in `dir`. With both slots in use the older
    /// one is replaced, and only by a later sequence number (mod 2^32), as the kernel's
    /// update_nl_seq does, so a retransmitted old segment cannot evict the current one.
    pub fn record_line_start(&mut self, dir: Direction, seq: u32) {
        if self.at_line_start(dir, seq) {
            return;
        }
        let d = dir.index();
        let n = usize::from(self.count[d]);
        if n < SEQS_PER_DIR {
            self.seqs[d][n] = seq;
            self.count[d] += 1;
            return;
        }
        let [a, b] = self.seqs[d];
        let oldest = if seq_before(a, b) { 0 } else { 1 };
        if seq_before(self.seqs[d][oldest], seq) {
            self.seqs[d][oldest] = seq;
        }
    }
}

/// TCP sequence comparison: is `a` before `b` (mod 2^32)?
fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The FTP helper. Stateless itself: all per-connection state is the private data.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ftp;

impl Ftp {
    pub const fn new() -> Ftp {
        Ftp
    }
}

impl Helper for Ftp {
    fn name(&self) -> &'static str {
        "ftp"
    }

    fn private_len(&self) -> usize {
        PRIVATE_LEN
    }

    fn process(&self, pkt: &Packet<'_>, ct: &Conntrack, private: &mut [u8]) -> Action {
        let mut action = Action::default();
        let Transport::Tcp { seq, .. } = pkt.transport else {
            return action;
        };
        // The kernel helper runs only on ESTABLISHED / ESTABLISHED_REPLY packets: an
        // Original-direction packet before the reply direction was seen (SYN, TFO data) is
        // left alone, without touching the line tracking.
        if pkt.dir == Direction::Original && ct.status & status::SEEN_REPLY == 0 {
            return action;
        }
        let payload = pkt.payload;
        let Some(&last) = payload.last() else {
            return action;
        };
        let mut st = State::decode(private);
        let dir = pkt.dir;

        // A fresh connection has no recorded line start, so the first data segment in each
        // direction is never parsed: that is the kernel's behaviour (find_nl_seq fails and
        // only SEQ_PICKUP, set for conntracks injected from user space, overrides it). It
        // costs nothing in a real session, where the first segments are the 220 greeting
        // and USER/AUTH, and it means data whose stream position we cannot vouch for
        // (we never saw the start of the stream) is never trusted. Learning the ISN from the
        // SYN would lift this, but the SYN is not guaranteed to reach a user-space helper.
        let parse = if st.at_line_start(dir, seq) {
            true
        } else if st.pickup[dir.index()] {
            st.pickup[dir.index()] = false;
            true
        } else {
            false
        };
        if parse {
            scan_segment(dir, payload, ct, &mut action);
        }
        if last == b'\n' {
            // Wraps with the sequence space; a payload never exceeds 64 KiB.
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            st.record_line_start(dir, seq.wrapping_add(len));
        }
        action.private_changed = st.encode(private);
        action
    }
}

/// What a recognised line announced, and where: `text` is the part of the line that
/// spells the endpoint, which a NAT rewrite replaces.
struct Announce<'a> {
    what: &'static str,
    /// None for 229, which announces a port on the sender's address.
    addr: Option<IpAddr>,
    port: u16,
    text: &'a [u8],
    spelling: EndpointText,
}

/// Parse every complete line of a segment known to start at a line start.
fn scan_segment(dir: Direction, payload: &[u8], ct: &Conntrack, action: &mut Action) {
    let mut rest = payload;
    // Code of a multi-line reply whose body we are in (reply direction only).
    let mut multiline: Option<[u8; 3]> = None;
    while !rest.is_empty() {
        let Some((line, next)) = text::split_line(rest) else {
            // The line continues in a segment that will not start at a line start, so it
            // will never be parsed: if it is a command we act on, we are losing it.
            if multiline.is_none() && looks_like_announcement(dir, rest) {
                action.parse_error = true;
            }
            break;
        };
        rest = next;
        if dir == Direction::Reply {
            if let Some(code) = multiline {
                // Inside a multi-line reply only the closing "ddd " line is a reply line.
                if line.get(..3) == Some(&code[..]) && line.get(3) == Some(&b' ') {
                    multiline = None;
                } else {
                    continue;
                }
            } else if let Some(code) = multiline_start(line) {
                multiline = Some(code);
                continue;
            }
        }
        match parse_line(dir, line) {
            Ok(Some(ann)) => announce(dir, payload, ann, ct, action),
            Ok(None) => {}
            Err(()) => action.parse_error = true,
        }
    }
}

/// "ddd-" opens a multi-line reply (RFC 959 4.2).
fn multiline_start(line: &[u8]) -> Option<[u8; 3]> {
    match line {
        [a, b, c, b'-', ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            Some([*a, *b, *c])
        }
        _ => None,
    }
}

const CLIENT_COMMANDS: [&[u8]; 2] = [b"PORT", b"EPRT"];
const SERVER_REPLIES: [&[u8]; 2] = [b"227 ", b"229 "];

/// Does an unterminated line begin (or could it begin) with something we parse?
fn looks_like_announcement(dir: Direction, partial: &[u8]) -> bool {
    let patterns = match dir {
        Direction::Original => &CLIENT_COMMANDS,
        Direction::Reply => &SERVER_REPLIES,
    };
    patterns.iter().any(|p| {
        text::starts_with_ignore_case(partial, p)
            || (partial.len() < p.len() && text::starts_with_ignore_case(p, partial))
    })
}

/// Recognise and parse one line. `Ok(None)`: not a line we act on; `Err`: a recognised
/// command or reply with malformed arguments.
fn parse_line(dir: Direction, line: &[u8]) -> Result<Option<Announce<'_>>, ()> {
    match dir {
        Direction::Original => {
            let Some(args) = command_args(line, b"PORT").or_else(|| command_args(line, b"EPRT"))
            else {
                return Ok(None);
            };
            if text::starts_with_ignore_case(line, b"PORT") {
                let (addr, port, text) = parse_port_args(args)?;
                Ok(Some(Announce {
                    what: "PORT",
                    addr: Some(IpAddr::V4(addr)),
                    port,
                    text,
                    spelling: EndpointText::Commas,
                }))
            } else {
                let (addr, port, text) = parse_eprt_args(args)?;
                let delim = text.first().copied().ok_or(())?;
                Ok(Some(Announce {
                    what: "EPRT",
                    addr: Some(addr),
                    port,
                    text,
                    spelling: EndpointText::Eprt { delim },
                }))
            }
        }
        Direction::Reply => {
            if let Some(rest) = line.strip_prefix(b"227 ") {
                let (addr, port, text) = parse_227(rest)?;
                Ok(Some(Announce {
                    what: "227",
                    addr: Some(IpAddr::V4(addr)),
                    port,
                    text,
                    spelling: EndpointText::Commas,
                }))
            } else if let Some(rest) = line.strip_prefix(b"229 ") {
                let (port, text) = parse_229(rest)?;
                Ok(Some(Announce {
                    what: "229",
                    addr: None,
                    port,
                    text,
                    spelling: EndpointText::Port,
                }))
            } else {
                Ok(None)
            }
        }
    }
}

/// Arguments of `cmd` if the line is that command: the verb (any case) followed by a
/// space, or the bare verb (recognised, arguments empty, hence malformed). A longer word
/// ("PORTAL") is not the command.
fn command_args<'a>(line: &'a [u8], cmd: &[u8]) -> Option<&'a [u8]> {
    if !text::starts_with_ignore_case(line, cmd) {
        return None;
    }
    let after = line.get(cmd.len()..)?;
    match after.first() {
        None => Some(after),
        Some(b' ') => Some(text::skip_spaces(after)),
        Some(_) => None,
    }
}

/// Only trailing blanks may follow the arguments.
fn only_blanks(rest: &[u8]) -> bool {
    text::skip_spaces(rest).is_empty()
}

/// "h1,h2,h3,h4,p1,p2" (RFC 959), each number 0..=255. Also returns the numbers' text.
fn parse_port_args(args: &[u8]) -> Result<(Ipv4Addr, u16, &[u8]), ()> {
    let (n, used) = text::parse_u8_list::<6>(args, b',').map_err(|_| ())?;
    if !only_blanks(args.get(used..).unwrap_or(&[])) {
        return Err(());
    }
    let (addr, port) = h_p(n);
    Ok((addr, port, args.get(..used).ok_or(())?))
}

fn h_p(n: [u8; 6]) -> (Ipv4Addr, u16) {
    let [a, b, c, d, p1, p2] = n;
    (Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([p1, p2]))
}

/// 227 text after "227 ". RFC 1123 4.1.2.6: the parentheses are optional, so like the
/// kernel we scan for the first digit; if a '(' is present we start there, so a digit in
/// the text before it ("227 Entering Passive Mode 2 (...)") does not derail us.
fn parse_227(rest: &[u8]) -> Result<(Ipv4Addr, u16, &[u8]), ()> {
    let from = text::find_byte(rest, b'(').map_or(0, |p| p + 1);
    let tail = rest.get(from..).ok_or(())?;
    let start = tail.iter().position(u8::is_ascii_digit).ok_or(())?;
    let nums = tail.get(start..).ok_or(())?;
    let (n, used) = text::parse_u8_list::<6>(nums, b',').map_err(|_| ())?;
    // A seventh number is not an address+port.
    if nums.get(used) == Some(&b',') {
        return Err(());
    }
    let (addr, port) = h_p(n);
    Ok((addr, port, nums.get(..used).ok_or(())?))
}

/// A valid RFC 2428 delimiter: printable ASCII 33..=126, not a digit.
fn is_delim(c: u8) -> bool {
    (33..=126).contains(&c) && !c.is_ascii_digit()
}

/// "<d>af<d>addr<d>port<d>" (RFC 2428). The address family must be 1 or 2; which family
/// the connection uses is checked by the caller (a mismatch is a third-party address).
/// Also returns the text from the first delimiter to the last.
fn parse_eprt_args(args: &[u8]) -> Result<(IpAddr, u16, &[u8]), ()> {
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
        b'1' => {
            let (n, used) = text::parse_u8_list::<4>(addr_text, b'.').map_err(|_| ())?;
            if used != addr_text.len() {
                return Err(());
            }
            IpAddr::V4(Ipv4Addr::from(n))
        }
        b'2' => {
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
    Ok((addr, port, args.get(..spelled).ok_or(())?))
}

/// 229 text after "229 ": "... (<d><d><d>port<d>)". Also returns the port's digits.
fn parse_229(rest: &[u8]) -> Result<(u16, &[u8]), ()> {
    let open = text::find_byte(rest, b'(').ok_or(())?;
    let inner = rest.get(open + 1..).ok_or(())?;
    let d = match inner {
        [a, b, c, ..] if a == b && b == c && is_delim(*a) => *a,
        _ => return Err(()),
    };
    let num = inner.get(3..).ok_or(())?;
    let (port, used) = text::parse_u16(num).map_err(|_| ())?;
    if num.get(used) != Some(&d) {
        return Err(());
    }
    Ok((port, num.get(..used).ok_or(())?))
}

/// Turn a parsed announcement into an expectation or a refusal, and on a NATed
/// connection into a rewrite of the announcement too.
///
/// As in the kernel, the data connection is expected from the peer (any source port) to
/// where this direction's packets appear to come from after NAT: `ct.tuple(!dir).dst`.
/// Without NAT that is the announced address itself. With NAT the expectation also
/// carries the real endpoint (the announced address and port) so the kernel translates
/// the data connection back to it, and the announcement is rewritten to name the
/// translated address, with a port the daemon confirms free on it.
fn announce(
    dir: Direction,
    payload: &[u8],
    ann: Announce<'_>,
    ct: &Conntrack,
    action: &mut Action,
) {
    let sender = ct.tuple(dir).src;
    let addr = ann.addr.unwrap_or(sender);
    let port = ann.port;
    let reason = if addr != sender {
        // Includes an EPRT of the other family: it cannot be the sender's address.
        Some(RefusalReason::ThirdPartyAddress)
    } else if port == 0 {
        Some(RefusalReason::BadPort)
    } else {
        None
    };
    if let Some(reason) = reason {
        // Capacity is per packet; beyond it refusals are only counted as lost.
        let _ = action.refusals.push(Refusal {
            what: ann.what,
            announced: addr,
            port,
            sender,
            reason,
        });
        return;
    }
    let towards = ct.tuple(dir.opposite());
    let nated = ct.is_nated();
    let exp = Expectation {
        class: EXPECT_CLASS,
        proto: IPPROTO_TCP,
        src: towards.src,
        src_port: None,
        dst: towards.dst,
        dst_port: port,
        flags: 0,
        nat: nated.then_some(ExpectNat {
            dir: dir.opposite(),
            saved_addr: addr,
            saved_port: port,
        }),
    };
    let index = action.expectations.len();
    if action.expectations.push(exp).is_err() {
        return;
    }
    if !nated {
        return;
    }
    let Some(range) = text::range_within(payload, ann.text) else {
        return;
    };
    if action
        .rewrites
        .push(Rewrite {
            start: range.start,
            end: range.end,
            text: ann.spelling,
            addr: towards.dst,
            expectation: index,
        })
        .is_err()
    {
        // An expectation the peer will never hear of would only hold a pinhole open.
        action.expectations.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Tuple;
    use std::vec::Vec;

    const CLI4: [u8; 4] = [192, 168, 1, 10];
    const SRV4: [u8; 4] = [192, 168, 1, 20];

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn ct_between(cli: IpAddr, srv: IpAddr) -> Conntrack {
        let orig = Tuple {
            src: cli,
            dst: srv,
            proto: 6,
            src_port: 40000,
            dst_port: 21,
        };
        Conntrack {
            orig,
            reply: orig.reversed(),
            status: status::SEEN_REPLY | status::CONFIRMED,
            id: Some(1),
            zone: None,
        }
    }

    /// One FTP control connection as the kernel would present it: per-direction
    /// sequence numbers and one private area.
    struct Conn {
        ct: Conntrack,
        private: [u8; PRIVATE_LEN],
        next_seq: [u32; 2],
    }

    impl Conn {
        fn new(ct: Conntrack) -> Conn {
            // ISNs near the wrap point so sequence arithmetic is exercised.
            Conn {
                ct,
                private: [0; PRIVATE_LEN],
                next_seq: [0xffff_fff0, 1000],
            }
        }

        fn v4() -> Conn {
            Conn::new(ct_between(v4(CLI4), v4(SRV4)))
        }

        fn v6() -> Conn {
            Conn::new(ct_between(v6("2001:db8::10"), v6("2001:db8::20")))
        }

        /// The greeting and USER: the first segment per direction, which is never parsed.
        fn warmed(mut self) -> Conn {
            self.send(Direction::Reply, b"220 ready\r\n");
            self.send(Direction::Original, b"USER anonymous\r\n");
            self
        }

        fn send_at(&mut self, dir: Direction, seq: u32, payload: &[u8]) -> Action {
            let t = self.ct.tuple(dir);
            let pkt = Packet {
                dir,
                src: t.src,
                dst: t.dst,
                src_port: t.src_port,
                dst_port: t.dst_port,
                transport: Transport::Tcp { seq, flags: 0x18 },
                payload,
            };
            Ftp.process(&pkt, &self.ct, &mut self.private)
        }

        fn send(&mut self, dir: Direction, payload: &[u8]) -> Action {
            let seq = self.next_seq[dir.index()];
            self.next_seq[dir.index()] = seq.wrapping_add(payload.len() as u32);
            self.send_at(dir, seq, payload)
        }

        fn client(&mut self, payload: &[u8]) -> Action {
            self.send(Direction::Original, payload)
        }

        fn server(&mut self, payload: &[u8]) -> Action {
            self.send(Direction::Reply, payload)
        }
    }

    fn one(a: &Action) -> Expectation {
        assert_eq!(a.expectations.len(), 1, "{a:?}");
        a.expectations[0]
    }

    fn nothing(a: &Action) {
        assert!(a.expectations.is_empty(), "{a:?}");
        assert!(a.refusals.is_empty(), "{a:?}");
    }

    #[test]
    fn identity() {
        assert_eq!(Ftp.name(), "ftp");
        assert_eq!(Ftp.private_len(), PRIVATE_LEN);
    }

    #[test]
    fn port_creates_expectation_from_server() {
        let mut c = Conn::v4().warmed();
        let a = c.client(b"PORT 192,168,1,10,156,64\r\n");
        let e = one(&a);
        assert_eq!(e.class, 0);
        assert_eq!(e.proto, IPPROTO_TCP);
        assert_eq!(e.src, v4(SRV4));
        assert_eq!(e.src_port, None);
        assert_eq!(e.dst, v4(CLI4));
        assert_eq!(e.dst_port, 156 * 256 + 64);
        assert_eq!(e.flags, 0);
        assert!(!a.parse_error);
        assert!(a.refusals.is_empty());
    }

    #[test]
    fn lowercase_and_bare_lf_commands() {
        let mut c = Conn::v4().warmed();
        assert_eq!(one(&c.client(b"port 192,168,1,10,0,21\n")).dst_port, 21);
        assert_eq!(
            one(&c.client(b"Eprt |1|192.168.1.10|6275|\r\n")).dst_port,
            6275
        );
        assert_eq!(
            one(&c.client(b"PORT   192,168,1,10,0,22  \r\n")).dst_port,
            22
        );
    }

    #[test]
    fn pasv_227_with_and_without_parentheses() {
        let mut c = Conn::v4().warmed();
        let e = one(&c.server(b"227 Entering Passive Mode (192,168,1,20,117,48).\r\n"));
        assert_eq!(
            (e.src, e.dst, e.dst_port),
            (v4(CLI4), v4(SRV4), 117 * 256 + 48)
        );
        let e = one(&c.server(b"227 Entering Passive Mode 192,168,1,20,4,1\r\n"));
        assert_eq!(e.dst_port, 1025);
        let e = one(&c.server(b"227 =192,168,1,20,4,2\r\n"));
        assert_eq!(e.dst_port, 1026);
        // A digit in the text before the parenthesis does not derail the parser.
        let e = one(&c.server(b"227 Mode 2 (192,168,1,20,4,3)\r\n"));
        assert_eq!(e.dst_port, 1027);
    }

    #[test]
    fn epsv_229_uses_sender_address_and_any_delimiter() {
        let mut c = Conn::v4().warmed();
        let e = one(&c.server(b"229 Entering Extended Passive Mode (|||6446|)\r\n"));
        assert_eq!((e.src, e.dst, e.dst_port), (v4(CLI4), v4(SRV4), 6446));
        let e = one(&c.server(b"229 ok (!!!1234!)\r\n"));
        assert_eq!(e.dst_port, 1234);
        let mut c = Conn::v6().warmed();
        let e = one(&c.server(b"229 Entering Extended Passive Mode (|||50000|)\r\n"));
        assert_eq!((e.src, e.dst), (v6("2001:db8::10"), v6("2001:db8::20")));
    }

    #[test]
    fn eprt_ipv6() {
        let mut c = Conn::v6().warmed();
        let e = one(&c.client(b"EPRT |2|2001:db8::10|5282|\r\n"));
        assert_eq!(
            (e.src, e.dst, e.dst_port),
            (v6("2001:db8::20"), v6("2001:db8::10"), 5282)
        );
        let e = one(&c.client(b"EPRT #2#2001:DB8:0:0:0:0:0:10#5283#\r\n"));
        assert_eq!(e.dst_port, 5283);
    }

    #[test]
    fn eprt_family_mismatch_is_refused() {
        let mut c = Conn::v4().warmed();
        let a = c.client(b"EPRT |2|2001:db8::10|5282|\r\n");
        assert!(a.expectations.is_empty());
        assert_eq!(a.refusals[0].reason, RefusalReason::ThirdPartyAddress);
        assert_eq!(a.refusals[0].what, "EPRT");
        let mut c = Conn::v6().warmed();
        let a = c.client(b"EPRT |1|192.168.1.10|5282|\r\n");
        assert!(a.expectations.is_empty());
        assert_eq!(a.refusals[0].reason, RefusalReason::ThirdPartyAddress);
    }

    #[test]
    fn bounce_to_third_party_is_refused() {
        let mut c = Conn::v4().warmed();
        let a = c.client(b"PORT 10,0,0,99,0,80\r\n");
        assert!(a.expectations.is_empty());
        assert_eq!(
            a.refusals[0],
            Refusal {
                what: "PORT",
                announced: v4([10, 0, 0, 99]),
                port: 80,
                sender: v4(CLI4),
                reason: RefusalReason::ThirdPartyAddress,
            }
        );
        assert!(!a.parse_error);
        let a = c.server(b"227 Entering Passive Mode (10,0,0,99,0,80)\r\n");
        assert_eq!(a.refusals[0].reason, RefusalReason::ThirdPartyAddress);
        assert_eq!(a.refusals[0].sender, v4(SRV4));
    }

    #[test]
    fn port_zero_is_refused() {
        let mut c = Conn::v4().warmed();
        let a = c.client(b"PORT 192,168,1,10,0,0\r\n");
        assert_eq!(a.refusals[0].reason, RefusalReason::BadPort);
        let a = c.server(b"229 x (|||0|)\r\n");
        assert_eq!(a.refusals[0].reason, RefusalReason::BadPort);
        assert!(a.expectations.is_empty());
    }

    #[test]
    fn malformed_arguments_set_parse_error() {
        let cases: &[&[u8]] = &[
            b"PORT 1234\r\n",
            b"PORT\r\n",
            b"PORT 192,168,1,10,256,1\r\n",
            b"PORT 192,168,1,10,99999999999,1\r\n",
            b"PORT 192,168,1,10,1\r\n",
            b"PORT 192,168,1,10,1,2,3\r\n",
            b"PORT 192,168,1,10,1,2x\r\n",
            b"PORT ,,,,,\r\n",
            b"EPRT |1|192.168.1.10|99999|\r\n",
            b"EPRT |1|192.168.1.10|5282\r\n",
            b"EPRT |3|192.168.1.10|5282|\r\n",
            b"EPRT 1|192.168.1.10|5282|\r\n",
            b"EPRT |1|192.168.1|5282|\r\n",
            b"EPRT |2|2001:db8::zz|5282|\r\n",
            b"EPRT |2|\xff\xfe|5282|\r\n",
            b"EPRT ||\r\n",
            b"EPRT\r\n",
        ];
        for case in cases {
            let mut c = Conn::v4().warmed();
            let a = c.client(case);
            assert!(a.parse_error, "{}", String::from_utf8_lossy(case));
            assert!(a.expectations.is_empty());
        }
        let replies: &[&[u8]] = &[
            b"227 Entering Passive Mode\r\n",
            b"227 (192,168,1,20,1)\r\n",
            b"227 (192,168,1,20,300,1)\r\n",
            b"227 (192,168,1,20,1,1,1)\r\n",
            b"229 Entering Extended Passive Mode\r\n",
            b"229 (|||)\r\n",
            b"229 (||6446|)\r\n",
            b"229 (111111)\r\n",
            b"229 (|||70000|)\r\n",
            b"229 (|||123)\r\n",
        ];
        for case in replies {
            let mut c = Conn::v4().warmed();
            let a = c.server(case);
            assert!(a.parse_error, "{}", String::from_utf8_lossy(case));
            assert!(a.expectations.is_empty());
        }
    }

    #[test]
    fn unrelated_lines_are_ignored() {
        let mut c = Conn::v4().warmed();
        for line in [
            &b"PORTAL 1,2,3,4,5,6\r\n"[..],
            b"LIST\r\n",
            b"RETR PORT 1,2,3,4,5,6\r\n",
        ] {
            let a = c.client(line);
            nothing(&a);
            assert!(!a.parse_error);
        }
        // Replies are not commands and commands are not replies.
        nothing(&c.server(b"PORT 192,168,1,20,4,1\r\n"));
        nothing(&c.client(b"227 (192,168,1,10,4,1)\r\n"));
        nothing(&c.server(b"2270 (192,168,1,20,4,1)\r\n"));
    }

    #[test]
    fn first_segment_per_direction_is_not_parsed() {
        // Kernel behaviour: no line start is known before a segment ending in '\n'.
        let mut c = Conn::v4();
        let a = c.client(b"PORT 192,168,1,10,4,1\r\n");
        nothing(&a);
        assert!(a.private_changed, "the line start after it is recorded");
        assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,2\r\n")).dst_port, 1026);
        nothing(&c.server(b"227 (192,168,1,20,4,3)\r\n"));
        assert_eq!(one(&c.server(b"227 (192,168,1,20,4,4)\r\n")).dst_port, 1028);
    }

    #[test]
    fn original_before_reply_seen_is_ignored() {
        let mut c = Conn::v4();
        c.ct.status = 0;
        let a = c.client(b"USER x\r\n");
        assert!(!a.private_changed);
        assert_eq!(c.private, [0; PRIVATE_LEN]);
    }

    #[test]
    fn segment_not_at_line_start_is_not_parsed() {
        let mut c = Conn::v4().warmed();
        // A command split across two segments: neither part is parsed.
        let a = c.client(b"PORT 192,168,");
        assert!(a.parse_error, "a recognised command we cannot finish");
        nothing(&a);
        let a = c.client(b"1,10,4,1\r\n");
        nothing(&a);
        assert!(!a.parse_error);
        // The line after it is at a recorded start again.
        assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,2\r\n")).dst_port, 1026);
        // Data injected at an arbitrary position (e.g. inside a file name) is ignored.
        let seq = c.next_seq[0].wrapping_add(7);
        nothing(&c.send_at(Direction::Original, seq, b"PORT 192,168,1,10,4,3\r\n"));
    }

    #[test]
    fn short_prefix_of_command_at_segment_end_flags_parse_error() {
        let mut c = Conn::v4().warmed();
        assert!(c.client(b"PO").parse_error);
        let mut c = Conn::v4().warmed();
        assert!(!c.client(b"NO").parse_error);
        let mut c = Conn::v4().warmed();
        assert!(c.server(b"22").parse_error);
    }

    #[test]
    fn retransmission_of_a_parsed_segment_is_parsed_again() {
        let mut c = Conn::v4().warmed();
        let seq = c.next_seq[0];
        assert_eq!(c.client(b"PORT 192,168,1,10,4,1\r\n").expectations.len(), 1);
        // Both the old start and the new one are remembered (2 per direction).
        assert_eq!(
            c.send_at(Direction::Original, seq, b"PORT 192,168,1,10,4,1\r\n")
                .expectations
                .len(),
            1
        );
    }

    #[test]
    fn pipelined_commands_in_one_segment() {
        let mut c = Conn::v4().warmed();
        let a = c.client(b"TYPE I\r\nPORT 192,168,1,10,4,1\r\nPORT 192,168,1,10,4,2\r\n");
        assert_eq!(a.expectations.len(), 2);
    }

    #[test]
    fn multiline_reply_body_is_not_parsed() {
        let mut c = Conn::v4().warmed();
        let a = c.server(
            b"230-Welcome\r\n227 (192,168,1,20,4,1)\r\n230 Logged in\r\n227 (192,168,1,20,4,2)\r\n",
        );
        assert_eq!(one(&a).dst_port, 1026);
        // The closing line of a multi-line reply is parsed.
        let a = c.server(b"227-Entering Passive Mode\r\n227 (192,168,1,20,4,3)\r\n");
        assert_eq!(one(&a).dst_port, 1027);
        // RFC 959 multi-line text may start with other codes; only "ddd " of the same code ends it.
        let a = c.server(b"211-Features\r\n229 (|||1|)\r\n211 End\r\n");
        nothing(&a);
    }

    #[test]
    fn huge_lines_and_garbage_do_not_panic() {
        let mut c = Conn::v4().warmed();
        let mut big = b"PORT ".to_vec();
        big.extend(std::iter::repeat_n(b'1', 60000));
        big.extend_from_slice(b"\r\n");
        assert!(c.client(&big).parse_error);
        let mut big = b"227 ".to_vec();
        big.extend(std::iter::repeat_n(b',', 60000));
        big.push(b'\n');
        assert!(c.server(&big).parse_error);
        let garbage: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        c.client(&garbage);
        c.server(&garbage);
        c.client(b"\n\n\n\r\r\n");
        nothing(&c.client(b"\n"));
    }

    #[test]
    fn udp_and_empty_payloads_are_ignored() {
        let c = Conn::v4();
        let t = c.ct.orig;
        let mut private = [0u8; PRIVATE_LEN];
        let pkt = Packet {
            dir: Direction::Original,
            src: t.src,
            dst: t.dst,
            src_port: t.src_port,
            dst_port: t.dst_port,
            transport: Transport::Udp,
            payload: b"PORT 192,168,1,10,4,1\r\n",
        };
        let a = Ftp.process(&pkt, &c.ct, &mut private);
        assert!(!a.private_changed);
        let pkt = Packet {
            transport: Transport::Tcp {
                seq: 1,
                flags: 0x10,
            },
            payload: b"",
            ..pkt
        };
        assert!(!Ftp.process(&pkt, &c.ct, &mut private).private_changed);
    }

    #[test]
    fn private_data_round_trip() {
        let mut st = State::default();
        st.record_line_start(Direction::Original, 0xffff_fffe);
        st.record_line_start(Direction::Reply, 7);
        st.record_line_start(Direction::Reply, 9);
        st.pickup[1] = true;
        let mut buf = [0u8; PRIVATE_LEN];
        assert!(st.encode(&mut buf));
        assert!(!st.encode(&mut buf), "unchanged state is not a change");
        assert_eq!(buf[0], LAYOUT_VERSION);
        assert_eq!(State::decode(&buf), st);
        assert!(
            buf[20..].iter().all(|&b| b == 0),
            "reserved bytes stay zero"
        );
        assert_eq!(State::decode(&[0; PRIVATE_LEN]), State::default());
    }

    #[test]
    fn garbage_private_data_is_fresh() {
        assert_eq!(State::decode(&[0xff; PRIVATE_LEN]), State::default());
        assert_eq!(State::decode(&[1; 5]), State::default());
        let mut bad = [0u8; PRIVATE_LEN];
        bad[0] = LAYOUT_VERSION;
        bad[1] = 3;
        assert_eq!(State::decode(&bad), State::default());
        // Processing with garbage private data neither panics nor trusts it.
        let mut c = Conn::v4();
        c.private = [0xff; PRIVATE_LEN];
        nothing(&c.client(b"PORT 192,168,1,10,4,1\r\n"));
        assert_eq!(c.private[0], LAYOUT_VERSION);
        // A too-short private area: processing still works, nothing is written.
        let t = c.ct.orig;
        let pkt = Packet {
            dir: Direction::Original,
            src: t.src,
            dst: t.dst,
            src_port: t.src_port,
            dst_port: t.dst_port,
            transport: Transport::Tcp {
                seq: 5,
                flags: 0x18,
            },
            payload: b"X\r\n",
        };
        let mut short = [0u8; 4];
        assert!(!Ftp.process(&pkt, &c.ct, &mut short).private_changed);
    }

    #[test]
    fn pickup_parses_next_segment_once() {
        let mut c = Conn::v4();
        State::picked_up().encode(&mut c.private);
        assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,1\r\n")).dst_port, 1025);
        let seq = c.next_seq[0].wrapping_add(3);
        nothing(&c.send_at(Direction::Original, seq, b"PORT 192,168,1,10,4,2\r\n"));
    }

    #[test]
    fn line_start_replacement_follows_the_kernel() {
        let mut st = State::default();
        let o = Direction::Original;
        st.record_line_start(o, 100);
        st.record_line_start(o, 200);
        st.record_line_start(o, 300); // replaces 100
        assert!(st.at_line_start(o, 200) && st.at_line_start(o, 300) && !st.at_line_start(o, 100));
        st.record_line_start(o, 50); // older than both: ignored
        assert!(!st.at_line_start(o, 50));
        // Across the wrap: 0xffff_fff0 is before 0x10.
        let mut st = State::default();
        st.record_line_start(o, 0xffff_fff0);
        st.record_line_start(o, 0xffff_fff8);
        st.record_line_start(o, 0x10);
        assert!(st.at_line_start(o, 0x10) && st.at_line_start(o, 0xffff_fff8));
        assert!(!st.at_line_start(Direction::Reply, 0x10));
    }

    // ---------------------------------------------------------------- NAT

    /// Inside client, the router's outside address, server (IPv4).
    const MASQ4: (IpAddr, IpAddr, IpAddr) = (
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
    );

    /// Client `cli`:40000 behind a router masquerading it as `public`:61000, talking to
    /// `srv`:21.
    fn masqueraded(cli: IpAddr, public: IpAddr, srv: IpAddr) -> Conntrack {
        let orig = Tuple {
            src: cli,
            dst: srv,
            proto: 6,
            src_port: 40000,
            dst_port: 21,
        };
        let mut reply = orig.reversed();
        reply.dst = public;
        reply.dst_port = 61000;
        Conntrack {
            orig,
            reply,
            status: status::SEEN_REPLY | status::CONFIRMED | status::SRC_NAT,
            id: Some(2),
            zone: None,
        }
    }

    /// Outside client 203.0.113.9:50000 reaching a port forward on 192.0.2.1:21 that
    /// leads to the server 198.51.100.2:21.
    fn port_forwarded() -> Conntrack {
        let orig = Tuple {
            src: v4([203, 0, 113, 9]),
            dst: v4([192, 0, 2, 1]),
            proto: 6,
            src_port: 50000,
            dst_port: 21,
        };
        let reply = Tuple {
            src: v4([198, 51, 100, 2]),
            dst: orig.src,
            proto: 6,
            src_port: 21,
            dst_port: 50000,
        };
        Conntrack {
            orig,
            reply,
            status: status::SEEN_REPLY | status::CONFIRMED | status::DST_NAT,
            id: Some(3),
            zone: None,
        }
    }

    fn one_rewrite(a: &Action, payload: &[u8]) -> (Rewrite, Vec<u8>) {
        assert_eq!(a.rewrites.len(), 1, "{a:?}");
        let rw = a.rewrites[0];
        assert_eq!(rw.expectation, 0);
        (rw, payload[rw.start..rw.end].to_vec())
    }

    #[test]
    fn nat_port_expects_on_the_public_address_and_follows_master_back() {
        let (cli, public, srv) = MASQ4;
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        let line = b"PORT 192,0,2,2,156,64\r\n";
        let a = c.client(line);
        let e = one(&a);
        assert_eq!(
            (e.src, e.src_port, e.dst, e.dst_port),
            (srv, None, public, 40000)
        );
        assert_eq!(
            e.nat,
            Some(ExpectNat {
                dir: Direction::Reply,
                saved_addr: cli,
                saved_port: 40000
            })
        );
        let (rw, text) = one_rewrite(&a, line);
        assert_eq!(text, b"192,0,2,2,156,64");
        assert_eq!((rw.text, rw.addr), (EndpointText::Commas, public));
    }

    #[test]
    fn nat_eprt_rewrite_covers_delimiters_and_keeps_the_senders() {
        let (cli, public, srv) = MASQ4;
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        let line = b"EPRT !1!192.0.2.2!40001!  \r\n";
        let a = c.client(line);
        assert_eq!(one(&a).dst_port, 40001);
        let (rw, text) = one_rewrite(&a, line);
        assert_eq!(text, b"!1!192.0.2.2!40001!");
        assert_eq!(rw.text, EndpointText::Eprt { delim: b'!' });
    }

    #[test]
    fn nat_eprt_ipv6() {
        let (cli, public, srv) = (
            v6("2001:db8:1::2"),
            v6("2001:db8:ffff::1"),
            v6("2001:db8:2::2"),
        );
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        let line = b"EPRT |2|2001:db8:1::2|40002|\r\n";
        let a = c.client(line);
        let e = one(&a);
        assert_eq!((e.src, e.dst, e.dst_port), (srv, public, 40002));
        let (rw, text) = one_rewrite(&a, line);
        assert_eq!(text, b"|2|2001:db8:1::2|40002|");
        assert_eq!(rw.addr, public);
    }

    #[test]
    fn nat_227_from_a_port_forwarded_server() {
        let ct = port_forwarded();
        let mut c = Conn::new(ct).warmed();
        let line = b"227 Entering Passive Mode (198,51,100,2,195,80).\r\n";
        let a = c.server(line);
        let e = one(&a);
        // Expected from the outside client, to the forwarded address, and mapped back
        // to the real server (the master's reply source).
        assert_eq!(
            (e.src, e.dst, e.dst_port),
            (ct.orig.src, ct.orig.dst, 50000)
        );
        assert_eq!(
            e.nat,
            Some(ExpectNat {
                dir: Direction::Original,
                saved_addr: ct.reply.src,
                saved_port: 50000
            })
        );
        let (rw, text) = one_rewrite(&a, line);
        assert_eq!(text, b"198,51,100,2,195,80");
        assert_eq!(rw.addr, ct.orig.dst);
    }

    #[test]
    fn nat_229_rewrites_the_port_digits_only() {
        let mut c = Conn::new(port_forwarded()).warmed();
        let line = b"229 Entering Extended Passive Mode (|||50001|)\r\n";
        let a = c.server(line);
        assert_eq!(one(&a).dst_port, 50001);
        let (rw, text) = one_rewrite(&a, line);
        assert_eq!(text, b"50001");
        assert_eq!(rw.text, EndpointText::Port);
    }

    #[test]
    fn nat_pipelined_announcements_each_get_a_rewrite() {
        let (cli, public, srv) = MASQ4;
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        let seg = b"PORT 192,0,2,2,0,21\r\nNOOP\r\nEPRT |1|192.0.2.2|22|\r\n";
        let a = c.client(seg);
        assert_eq!(a.expectations.len(), 2);
        assert_eq!(a.rewrites.len(), 2);
        assert_eq!(
            &seg[a.rewrites[0].start..a.rewrites[0].end],
            b"192,0,2,2,0,21"
        );
        assert_eq!(
            &seg[a.rewrites[1].start..a.rewrites[1].end],
            b"|1|192.0.2.2|22|"
        );
        assert_eq!(a.rewrites[1].expectation, 1);
        assert!(a.rewrites[0].end <= a.rewrites[1].start);
    }

    #[test]
    fn nat_third_party_is_refused_without_rewrite() {
        let (cli, public, srv) = MASQ4;
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        // The public address is not the sender's real address either.
        for line in [&b"PORT 192,0,2,99,4,1\r\n"[..], b"PORT 203,0,113,1,4,1\r\n"] {
            let a = c.client(line);
            assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
            assert_eq!(a.refusals.len(), 1);
        }
    }

    #[test]
    fn without_nat_nothing_is_rewritten() {
        let mut c = Conn::v4().warmed();
        let a = c.client(b"PORT 192,168,1,10,156,64\r\n");
        assert_eq!(one(&a).nat, None);
        assert!(a.rewrites.is_empty());
    }
}
