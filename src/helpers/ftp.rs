//! FTP helper (RFC 959 PORT/227, RFC 2428 EPRT/229), modelled on the kernel's
//! net/netfilter/nf_conntrack_ftp.c.
//!
//! What carries over from the kernel, and where we deliberately differ:
//! - Only the first line of a segment is parsed, and only if the segment starts at a line
//!   start: per direction the private data keeps the two most recent TCP sequence numbers
//!   that followed a '\n' (the kernel's `seq_aft_nl`), and a segment whose sequence number
//!   is not one of them is not parsed at all. Like the kernel, one announcement per
//!   segment. Later lines of a segment are never parsed: a server that echoes a
//!   client-chosen line feed ("550 foo\n227 (...)") would otherwise let the client forge a
//!   227 and open a port of a port-forwarded server (issue #11). The cost is the kernel's
//!   too: a PORT pipelined behind another command in one segment is not seen.
//! - In the reply direction we also follow multi-line replies ("ddd-" ... "ddd "), which
//!   the kernel does not: a body line that happens to start a segment (a file name or
//!   echoed text cut at the MSS, a retransmission) is not a reply and is not parsed. The
//!   closing "ddd " line is a reply line and is parsed. See [`State`] for what is kept.
//! - Commands are matched case-insensitively ("port" works, as with strncasecmp).
//! - The announced address must be the sender's own address in its direction's tuple
//!   (the kernel's default `loose=0`): no expectations towards third parties.
//! - On a port-forwarded connection (destination NAT) announced ports below 1024 are
//!   refused unless the helper's `allow_low_ports` policy says otherwise: an expectation
//!   to port 22 of a forwarded server is never a data connection.
//! - Arguments are validated strictly (each PORT/227 number <= 255, ports 1..=65535,
//!   exactly six numbers); the kernel only gained the <= 255 check in 2026.
//! - The kernel drops a packet whose command it recognises but cannot parse ("partial
//!   match"), to force a retransmission; a helper here never drops, it reports
//!   `parse_error` and still records the line start so later commands are seen.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::helpers::{
    Helper, Packet, Plan, Policy, PortText, Refusal, RefusalReason, Replacement, Span, Spelling,
    Store, Transport,
};
use crate::model::{Conntrack, Direction, ExpectNat, Expectation, IPPROTO_TCP, status};
use crate::wire::text;

/// Well-known FTP control port.
pub const PORT: u16 = 21;

/// Announced ports below this are refused on port-forwarded connections (see
/// [`Policy::allow_low_ports`]).
pub const LOW_PORT_LIMIT: u16 = 1024;

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

/// A connection's directions (original, reply), indexed by `Direction::index`.
const DIRECTIONS: usize = 2;

/// Digits of an FTP reply code (RFC 959: 100..=999).
const CODE_DIGITS: u8 = 3;

/// The private data's cursor head spells a line's first digits as 1 + HEAD_SCALE * n +
/// value (see the layout below): one more than the largest `CODE_DIGITS`-digit value.
const HEAD_SCALE: u16 = 1000;

/// Numbers in PORT's and 227's "h1,h2,h3,h4,p1,p2".
const HOST_PORT_NUMBERS: usize = 6;

/// Numbers in an IPv4 address of EPRT.
const IPV4_OCTETS: usize = 4;

/// 229's delimiters before the port: "(|||port|)".
const EPSV_LEADING_DELIMITERS: usize = 3;

/// Bytes of a sequence number and of a reply code in the private data.
const SEQ_BYTES: usize = core::mem::size_of::<u32>();
const CODE_BYTES: usize = core::mem::size_of::<u16>();

/// Private-data layout, version 1 (all integers big-endian). Bytes 20..32 were reserved
/// (zero) before multi-line replies were followed; zero still means "none" there, so
/// private data written before keeps its meaning.
///
/// | offset | size | field                                                          |
/// |--------|------|----------------------------------------------------------------|
/// | 0      | 1    | layout version (1); 0 = fresh                                  |
/// | 1      | 1    | number of valid line-start seqs, Original direction (0..=2)    |
/// | 2      | 1    | same for Reply                                                 |
/// | 3      | 1    | flags: bit 0/1 = pick up next segment in Original/Reply;       |
/// |        |      | bit 2 = the reply cursor (24..32) is valid                     |
/// | 4      | 8    | Original line-start seqs [2 x u32]                             |
/// | 12     | 8    | Reply line-start seqs [2 x u32]                                |
/// | 20     | 4    | Reply: multi-line reply code in force at each reply line start |
/// |        |      | [2 x u16]; 0 = none (the line starts a reply), else 100..=999  |
/// | 24     | 4    | Reply cursor: sequence number where the newest reply segment   |
/// |        |      | ended                                                          |
/// | 28     | 2    | cursor code: the multi-line code in force there (see `head`)   |
/// | 30     | 2    | cursor head: 0 = the line in progress is decided and `code` is |
/// |        |      | the one in force on the next line; 1 + 1000 * n + v = the     |
/// |        |      | line in progress began with n (0..=3) digits of value v, and   |
/// |        |      | belongs to the reply `code` (n = 0: the cursor is at a line    |
/// |        |      | start)                                                         |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    count: [u8; DIRECTIONS],
    seqs: [[u32; SEQS_PER_DIR]; DIRECTIONS],
    /// Reply direction: the code of the multi-line reply a line starting at each recorded
    /// reply line start belongs to (0: none, the line starts a reply).
    codes: [u16; SEQS_PER_DIR],
    /// The kernel's NF_CT_FTP_SEQ_PICKUP: parse the next segment in that direction even
    /// though its position is unknown. Only set for connections adopted mid-stream.
    pickup: [bool; DIRECTIONS],
    /// Reply direction: where the newest reply segment ended, and the multi-line state
    /// there, so a reply cut in the middle of a line (a long STAT or FEAT answer cut at
    /// the MSS) is followed into the next segment.
    cursor: Option<Cursor>,
}

/// The reply stream position after the newest reply segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    seq: u32,
    line: Line,
}

/// Multi-line reply tracking (RFC 959 4.2) for one reply line: a line "ddd-" opens a
/// multi-line reply, whose body lines are text, and the line "ddd " (or "ddd" alone)
/// with the same code closes it. Only the first four bytes of a line decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// The line's first bytes are still coming: it belongs to the multi-line reply
    /// `code` (0: none), and began with `len` (at most 3) digits of value `digits`.
    Head { code: u16, len: u8, digits: u16 },
    /// The rest of the line does not matter: `next` is the code in force on the next line.
    Rest { next: u16 },
}

impl Line {
    const fn start(code: u16) -> Line {
        Line::Head {
            code,
            len: 0,
            digits: 0,
        }
    }

    /// The next byte of the line (never its '\n').
    fn feed(self, b: u8) -> Line {
        let Line::Head { code, len, digits } = self else {
            return self;
        };
        if len >= CODE_DIGITS {
            return Line::Rest {
                next: Line::after(code, digits, Some(b)),
            };
        }
        // Reply codes are 100..=999: a leading 0 is not one.
        if !b.is_ascii_digit() || (len == 0 && b == b'0') {
            return Line::Rest { next: code };
        }
        let len = len + 1;
        let digits = digits * 10 + u16::from(b - b'0');
        // Inside a multi-line reply only its own code can begin the closing line.
        if code != 0 && code / 10u16.pow(u32::from(CODE_DIGITS - len)) != digits {
            return Line::Rest { next: code };
        }
        Line::Head { code, len, digits }
    }

    /// Feed the start of a line; bytes after the fourth change nothing.
    fn feed_all(mut self, bytes: &[u8]) -> Line {
        for &b in bytes {
            if let Line::Rest { .. } = self {
                break;
            }
            self = self.feed(b);
        }
        self
    }

    /// The line ended: the code in force on the next line.
    fn end(self) -> u16 {
        match self {
            Line::Rest { next } => next,
            Line::Head {
                code,
                len: CODE_DIGITS,
                digits,
            } => Line::after(code, digits, None),
            Line::Head { code, .. } => code,
        }
    }

    /// The code in force after a line that began with the three digits `digits` and
    /// then `then` (`None`: the line ended there). "ddd-" opens a multi-line reply;
    /// inside one, its own code followed by a space (or CR, or nothing) closes it.
    fn after(code: u16, digits: u16, then: Option<u8>) -> u16 {
        if code == 0 {
            if then == Some(b'-') { digits } else { 0 }
        } else if digits == code && matches!(then, None | Some(b' ' | b'\r')) {
            0
        } else {
            code
        }
    }

    /// The code the line in progress belongs to or, once decided, the next line's: the
    /// best guess for a segment that starts somewhere unknown.
    fn code(self) -> u16 {
        match self {
            Line::Head { code, .. } => code,
            Line::Rest { next } => next,
        }
    }

    fn encode(self) -> (u16, u16) {
        match self {
            Line::Head { code, len, digits } => (code, 1 + HEAD_SCALE * u16::from(len) + digits),
            Line::Rest { next } => (next, 0),
        }
    }

    fn decode(code: u16, head: u16) -> Option<Line> {
        if !valid_code(code) {
            return None;
        }
        if head == 0 {
            return Some(Line::Rest { next: code });
        }
        let h = head - 1;
        let (len, digits) = (h / HEAD_SCALE, h % HEAD_SCALE);
        let least = match len {
            0 => 0,
            1 => 1,
            2 => 10,
            3 => 100,
            _ => return None,
        };
        let bound = 10u16.pow(u32::from(len));
        if digits >= bound || digits < least {
            return None;
        }
        let len = u8::try_from(len).ok()?;
        Some(Line::Head { code, len, digits })
    }
}

fn valid_code(code: u16) -> bool {
    code == 0 || (100..=999).contains(&code)
}

/// Follow the multi-line state from `line` through `payload`. Only the first bytes of
/// each line are looked at.
fn track(mut line: Line, payload: &[u8]) -> Line {
    let mut rest = payload;
    while let Some(lf) = text::find_lf(rest) {
        line = Line::start(line.feed_all(rest.get(..lf).unwrap_or(&[])).end());
        rest = rest.get(lf + 1..).unwrap_or(&[]);
    }
    line.feed_all(rest)
}

mod off {
    pub const VERSION: usize = 0;
    pub const COUNT: usize = 1;
    pub const FLAGS: usize = 3;
    pub const SEQS: usize = 4;
    pub const CODES: usize = 20;
    pub const CURSOR_SEQ: usize = 24;
    pub const CURSOR_CODE: usize = 28;
    pub const CURSOR_HEAD: usize = 30;
}

const FLAG_CURSOR: u8 = 4;

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
    /// buffer, unknown version, impossible counts or codes) is treated as a fresh
    /// connection: losing line tracking costs at most one missed command, misreading it
    /// could cost more.
    pub fn decode(private: &[u8]) -> State {
        Self::try_decode(private).unwrap_or_default()
    }

    fn try_decode(private: &[u8]) -> Option<State> {
        let buf = private.get(..PRIVATE_LEN)?;
        if crate::wire::byte(buf, off::VERSION) != LAYOUT_VERSION {
            return None;
        }
        let mut st = State::default();
        for d in 0..DIRECTIONS {
            let n = crate::wire::byte(buf, off::COUNT + d);
            if usize::from(n) > SEQS_PER_DIR {
                return None;
            }
            st.count[d] = n;
            for (i, slot) in st.seqs[d].iter_mut().enumerate() {
                if i < usize::from(n) {
                    *slot = crate::wire::be32(buf, off::SEQS + (d * SEQS_PER_DIR + i) * SEQ_BYTES);
                }
            }
        }
        for (i, code) in st.codes.iter_mut().enumerate() {
            if i < usize::from(st.count[Direction::Reply.index()]) {
                *code = crate::wire::be16(buf, off::CODES + i * CODE_BYTES);
                if !valid_code(*code) {
                    return None;
                }
            }
        }
        let flags = crate::wire::byte(buf, off::FLAGS);
        st.pickup = [flags & 1 != 0, flags & 2 != 0];
        if flags & FLAG_CURSOR != 0 {
            st.cursor = Some(Cursor {
                seq: crate::wire::be32(buf, off::CURSOR_SEQ),
                line: Line::decode(
                    crate::wire::be16(buf, off::CURSOR_CODE),
                    crate::wire::be16(buf, off::CURSOR_HEAD),
                )?,
            });
        }
        Some(st)
    }

    /// Encode into `private` (which must hold `PRIVATE_LEN` bytes; shorter buffers are
    /// left untouched). Returns whether any byte changed.
    pub fn encode(&self, private: &mut [u8]) -> bool {
        let Some(buf) = private.get_mut(..PRIVATE_LEN) else {
            return false;
        };
        let mut out = [0u8; PRIVATE_LEN];
        out[off::VERSION] = LAYOUT_VERSION;
        for d in 0..DIRECTIONS {
            out[off::COUNT + d] = self.count[d];
            for (i, seq) in self.seqs[d].iter().enumerate() {
                if i < usize::from(self.count[d]) {
                    let at = off::SEQS + (d * SEQS_PER_DIR + i) * SEQ_BYTES;
                    crate::wire::set_be32(&mut out, at, *seq);
                }
            }
        }
        for (i, code) in self.codes.iter().enumerate() {
            if i < usize::from(self.count[Direction::Reply.index()]) {
                crate::wire::set_be16(&mut out, off::CODES + i * CODE_BYTES, *code);
            }
        }
        let mut flags = u8::from(self.pickup[0]) | (u8::from(self.pickup[1]) << 1);
        if let Some(c) = self.cursor {
            flags |= FLAG_CURSOR;
            let (code, head) = c.line.encode();
            crate::wire::set_be32(&mut out, off::CURSOR_SEQ, c.seq);
            crate::wire::set_be16(&mut out, off::CURSOR_CODE, code);
            crate::wire::set_be16(&mut out, off::CURSOR_HEAD, head);
        }
        out[off::FLAGS] = flags;
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

    /// If `seq` is a recorded line start in `dir`: the multi-line reply code in force
    /// there (always 0 in the Original direction).
    fn line_start(&self, dir: Direction, seq: u32) -> Option<u16> {
        let i = self.valid(dir).iter().position(|&s| s == seq)?;
        Some(match dir {
            Direction::Original => 0,
            Direction::Reply => self.codes.get(i).copied().unwrap_or(0),
        })
    }

    /// Remember that a line starts at `seq` in `dir`, outside any multi-line reply. With
    /// both slots in use the older one is replaced, and only by a later sequence number
    /// (mod 2^32), as the kernel's update_nl_seq does, so a retransmitted old segment
    /// cannot evict the current one.
    pub fn record_line_start(&mut self, dir: Direction, seq: u32) {
        self.record(dir, seq, 0);
    }

    /// `record_line_start` with the multi-line reply code in force there (Reply only).
    fn record(&mut self, dir: Direction, seq: u32, code: u16) {
        if self.at_line_start(dir, seq) {
            return;
        }
        let d = dir.index();
        let code = if dir == Direction::Reply { code } else { 0 };
        let n = usize::from(self.count[d]);
        let slot = if n < SEQS_PER_DIR {
            self.count[d] += 1;
            n
        } else {
            let [a, b] = self.seqs[d];
            let oldest = if seq_before(a, b) { 0 } else { 1 };
            if !seq_before(self.seqs[d][oldest], seq) {
                return;
            }
            oldest
        };
        self.seqs[d][slot] = seq;
        if dir == Direction::Reply {
            self.codes[slot] = code;
        }
    }

    /// The newest known multi-line state of the reply stream.
    fn newest_reply_code(&self) -> u16 {
        if let Some(c) = self.cursor {
            return c.line.code();
        }
        let r = Direction::Reply;
        match self.valid(r) {
            [a] => self.line_start(r, *a).unwrap_or(0),
            [a, b] => {
                let newest = if seq_before(*a, *b) { *b } else { *a };
                self.line_start(r, newest).unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// Where a segment at `seq` starts: whether its first line may be parsed, and the
    /// multi-line state at its first byte. Consumes a pickup.
    fn position(&mut self, dir: Direction, seq: u32) -> (bool, Line) {
        if let Some(code) = self.line_start(dir, seq) {
            return (true, Line::start(code));
        }
        if self.pickup[dir.index()] {
            self.pickup[dir.index()] = false;
            return (true, Line::start(0));
        }
        if dir == Direction::Reply
            && let Some(c) = self.cursor.filter(|c| c.seq == seq)
        {
            // Continues the line the previous reply segment ended in.
            return (false, c.line);
        }
        // Somewhere unknown (a loss, reordering, a partial retransmission): its first
        // line cannot be judged; assume the newest known multi-line state after it.
        (
            false,
            Line::Rest {
                next: if dir == Direction::Reply {
                    self.newest_reply_code()
                } else {
                    0
                },
            },
        )
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
    /// FTP keeps everything in the private data; `store` is not used.
    fn analyse(
        &self,
        pkt: &Packet<'_>,
        ct: &Conntrack,
        private: &mut [u8],
        _store: &mut Store,
        policy: Policy,
    ) -> Plan {
        let mut plan = Plan::default();
        let Transport::Tcp { seq, .. } = pkt.transport else {
            return plan;
        };
        // The kernel helper runs only on ESTABLISHED / ESTABLISHED_REPLY packets: an
        // Original-direction packet before the reply direction was seen (SYN, TFO data) is
        // left alone, without touching the line tracking.
        if pkt.dir == Direction::Original && ct.status & status::SEEN_REPLY == 0 {
            return plan;
        }
        let payload = pkt.payload;
        let Some(&last) = payload.last() else {
            return plan;
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
        let (at_line_start, start) = st.position(dir, seq);
        if at_line_start && first_line_is_a_reply(start, payload) {
            parse_first_line(dir, payload, ct, policy, &mut plan);
        }
        // Wraps with the sequence space; a payload never exceeds 64 KiB.
        let end = seq.wrapping_add(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        let after = match dir {
            Direction::Original => Line::start(0),
            Direction::Reply => track(start, payload),
        };
        if last == b'\n' {
            st.record(dir, end, after.code());
        }
        if dir == Direction::Reply && st.cursor.is_none_or(|c| !seq_before(end, c.seq)) {
            st.cursor = Some(Cursor {
                seq: end,
                line: after,
            });
        }
        plan.private_changed = st.encode(private);
        plan
    }
}

/// Is the first line of a segment that starts at a line start with multi-line state
/// `start` a line we may parse: not the body of a multi-line reply (its closing line is
/// a reply line)? Always true in the Original direction, where the state is 0.
fn first_line_is_a_reply(start: Line, payload: &[u8]) -> bool {
    let code = start.code();
    if code == 0 {
        return true;
    }
    let first = match text::find_lf(payload) {
        Some(lf) => start.feed_all(payload.get(..lf).unwrap_or(&[])).end(),
        None => match start.feed_all(payload) {
            Line::Rest { next } => next,
            Line::Head { .. } => code,
        },
    };
    first == 0
}

/// How an announcement spells its endpoint, so that a NAT rewrite spells the translated
/// one the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointText {
    /// "h1,h2,h3,h4,p1,p2" (PORT and 227).
    Commas,
    /// `<d>1<d>a.b.c.d<d>port<d>` or `<d>2<d>ipv6<d>port<d>` (EPRT), with the sender's
    /// delimiter.
    Eprt { delim: u8 },
    /// The port alone, in decimal (229).
    Port,
}

impl EndpointText {
    /// The plan's spelling of `addr` with the port the daemon decides (the address goes
    /// into the plan's text). None when `addr` cannot be written this way (an IPv6
    /// address in PORT/227) or the plan's text is full.
    pub fn spelling(self, addr: IpAddr, plan: &mut Plan) -> Option<Spelling> {
        Some(match (self, addr) {
            (EndpointText::Commas, IpAddr::V4(a)) => {
                let [a, b, c, d] = a.octets();
                Spelling {
                    before: plan.text(format_args!("{a},{b},{c},{d},"))?,
                    port: PortText::Octets { sep: b',' },
                    after: Span::EMPTY,
                }
            }
            (EndpointText::Commas, IpAddr::V6(_)) => return None,
            (EndpointText::Eprt { delim }, addr) => {
                let d = char::from(delim);
                let af = char::from(if addr.is_ipv4() { EPRT_IPV4 } else { EPRT_IPV6 });
                Spelling {
                    before: plan.text(format_args!("{d}{af}{d}{addr}{d}"))?,
                    port: PortText::Decimal,
                    after: plan.text(format_args!("{d}"))?,
                }
            }
            (EndpointText::Port, _) => Spelling {
                before: Span::EMPTY,
                port: PortText::Decimal,
                after: Span::EMPTY,
            },
        })
    }
}

/// What a recognised line announced, and where: `text` is the part of the line that
/// spells the endpoint, which a NAT rewrite replaces.
struct Announce<'a> {
    /// None for 229, which announces a port on the sender's address.
    addr: Option<IpAddr>,
    port: u16,
    text: &'a [u8],
    spelling: EndpointText,
}

/// How a pattern must be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Follow {
    /// A command verb: a space (then the arguments) or the end of the line. A longer word
    /// ("PORTAL") is not the command; the bare verb is, with empty (malformed) arguments.
    Verb,
    /// A reply code whose pattern includes its space: the rest of the line as it is.
    Text,
}

/// One line the helper acts on, as the kernel's `search[dir][]` table in
/// nf_conntrack_ftp.c: matched case-insensitively at the start of a segment's first
/// line, in one direction; `parse` reads the arguments.
struct Search {
    pattern: &'static [u8],
    dir: Direction,
    follow: Follow,
    /// The element's name in refusals and logs.
    what: &'static str,
    parse: fn(&[u8]) -> Result<Announce<'_>, ()>,
}

/// Everything FTP parses: PORT and EPRT from the client, 227 and 229 from the server.
const SEARCH: [Search; 4] = [
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
    fn arguments<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
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
fn parse_first_line(
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
fn looks_like_announcement(dir: Direction, partial: &[u8]) -> bool {
    SEARCH.iter().filter(|s| s.dir == dir).any(|s| {
        text::starts_with_ignore_case(partial, s.pattern)
            || (partial.len() < s.pattern.len()
                && text::starts_with_ignore_case(s.pattern, partial))
    })
}

/// Only trailing blanks may follow the arguments.
fn only_blanks(rest: &[u8]) -> bool {
    text::skip_spaces(rest).is_empty()
}

/// PORT arguments "h1,h2,h3,h4,p1,p2" (RFC 959), each number 0..=255.
fn parse_port_args(args: &[u8]) -> Result<Announce<'_>, ()> {
    let (n, used) = text::parse_u8_list::<HOST_PORT_NUMBERS>(args, b',').map_err(|_| ())?;
    if !only_blanks(args.get(used..).unwrap_or(&[])) {
        return Err(());
    }
    h_p(n, args.get(..used).ok_or(())?)
}

/// The announcement of six comma-separated numbers spelled `text`.
fn h_p(n: [u8; HOST_PORT_NUMBERS], text: &[u8]) -> Result<Announce<'_>, ()> {
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
fn parse_227(rest: &[u8]) -> Result<Announce<'_>, ()> {
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
const EPRT_IPV4: u8 = b'1';
const EPRT_IPV6: u8 = b'2';

/// A valid RFC 2428 delimiter: printable ASCII 33..=126, not a digit.
fn is_delim(c: u8) -> bool {
    (33..=126).contains(&c) && !c.is_ascii_digit()
}

/// "<d>af<d>addr<d>port<d>" (RFC 2428). The address family must be 1 or 2; which family
/// the connection uses is checked by the caller (a mismatch is a third-party address).
/// The announcement's text runs from the first delimiter to the last.
fn parse_eprt_args(args: &[u8]) -> Result<Announce<'_>, ()> {
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
fn parse_229(rest: &[u8]) -> Result<Announce<'_>, ()> {
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

/// Turn a parsed announcement into an expectation or a refusal, and on a NATed
/// connection into a rewrite of the announcement too.
///
/// On a connection whose destination was translated (a port forward), a port below
/// [`LOW_PORT_LIMIT`] is refused unless `policy.allow_low_ports`: FTP data ports are
/// not privileged ports, and an expectation to port 22 of a forwarded server is a
/// pinhole for whoever made the server announce it. Both directions: PORT from an
/// outside client to its own port 21 is no data connection either.
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
    what: &'static str,
    ann: Announce<'_>,
    ct: &Conntrack,
    policy: Policy,
    plan: &mut Plan,
) {
    let sender = ct.tuple(dir).src;
    let addr = ann.addr.unwrap_or(sender);
    let port = ann.port;
    let reason = if addr != sender {
        // Includes an EPRT of the other family: it cannot be the sender's address.
        Some(RefusalReason::ThirdPartyAddress)
    } else if port == 0 {
        Some(RefusalReason::BadPort)
    } else if port < LOW_PORT_LIMIT && ct.status & status::DST_NAT != 0 && !policy.allow_low_ports {
        Some(RefusalReason::LowPort)
    } else {
        None
    };
    if let Some(reason) = reason {
        // Capacity is per packet; beyond it refusals are only counted as lost.
        let _ = plan.refuse(Refusal {
            what,
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
        class: crate::helpers::registry::FTP_DATA,
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
    let Some(index) = plan.expect(exp) else {
        return;
    };
    if !nated {
        return;
    }
    let Some(range) = text::range_within(payload, ann.text) else {
        return;
    };
    let rewritten = ann
        .spelling
        .spelling(towards.dst, plan)
        .is_some_and(|spelling| {
            plan.rewrite(
                range.start,
                range.end,
                Replacement::Endpoint {
                    expectation: index,
                    spelling,
                },
            )
        });
    if !rewritten {
        // An expectation the peer will never hear of would only hold a pinhole open.
        plan.expectations.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tuple;
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
        policy: Policy,
    }

    impl Conn {
        fn new(ct: Conntrack) -> Conn {
            // ISNs near the wrap point so sequence arithmetic is exercised.
            Conn {
                ct,
                private: [0; PRIVATE_LEN],
                next_seq: [0xffff_fff0, 1000],
                policy: Policy::default(),
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

        fn send_at(&mut self, dir: Direction, seq: u32, payload: &[u8]) -> Plan {
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
            Ftp.analyse(
                &pkt,
                &self.ct,
                &mut self.private,
                &mut Store::default(),
                self.policy,
            )
        }

        fn send(&mut self, dir: Direction, payload: &[u8]) -> Plan {
            let seq = self.next_seq[dir.index()];
            self.next_seq[dir.index()] = seq.wrapping_add(payload.len() as u32);
            self.send_at(dir, seq, payload)
        }

        fn client(&mut self, payload: &[u8]) -> Plan {
            self.send(Direction::Original, payload)
        }

        fn server(&mut self, payload: &[u8]) -> Plan {
            self.send(Direction::Reply, payload)
        }
    }

    fn one(a: &Plan) -> Expectation {
        assert_eq!(a.expectations.len(), 1, "{a:?}");
        assert_eq!(a.expectations[0].pairing, crate::helpers::Pairing::Single);
        a.expectations[0].exp
    }

    fn nothing(a: &Plan) {
        assert!(a.expectations.is_empty(), "{a:?}");
        assert!(a.refusals.is_empty(), "{a:?}");
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
        // Like nf_conntrack_ftp, only the first line of a segment is parsed. This used to
        // parse every line (two expectations here), which let an echoing server forge a
        // 227 on a later line (issue #11). A client that pipelines PORT behind another
        // command loses active mode through the helper, as it does with the kernel's.
        let mut c = Conn::v4().warmed();
        let a = c.client(b"TYPE I\r\nPORT 192,168,1,10,4,1\r\nPORT 192,168,1,10,4,2\r\n");
        nothing(&a);
        assert!(!a.parse_error);
        // A PORT first in the segment is parsed; the PORT after it is not.
        let a = c.client(b"PORT 192,168,1,10,4,3\r\nPORT 192,168,1,10,4,4\r\n");
        assert_eq!(one(&a).dst_port, 1027);
        // The next segment starts at a recorded line start again.
        assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,5\r\n")).dst_port, 1029);
    }

    #[test]
    fn port_after_another_command_in_the_same_segment_is_not_parsed() {
        let mut c = Conn::v4().warmed();
        nothing(&c.client(b"NOOP\r\nPORT 192,168,1,10,4,1\r\n"));
        nothing(&c.client(b"NOOP\r\neprt |1|192.168.1.10|1025|\r\n"));
        // An unfinished PORT on a later line is not a parse error: it was never going
        // to be parsed.
        assert!(!c.client(b"NOOP\r\nPORT 192,168,").parse_error);
    }

    #[test]
    fn echoed_line_feed_cannot_forge_a_227() {
        // Issue #11: a port-forwarded server echoes a client-chosen line feed in a reply.
        // An outside client must not get a pinhole to the server's port 22 out of it.
        let ct = port_forwarded();
        let mut c = Conn::new(ct).warmed();
        for seg in [
            &b"550 foo\n227 Entering Passive Mode (198,51,100,2,0,22): x\r\n"[..],
            b"550 foo\r\n227 Entering Passive Mode (198,51,100,2,0,22)\r\n",
            b"500 x\n229 Entering Extended Passive Mode (|||22|)\r\n",
        ] {
            let a = c.server(seg);
            assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
            assert!(a.refusals.is_empty() && !a.parse_error, "{a:?}");
        }
        // The session itself still works: a 227 that starts a segment is honoured.
        let a = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80).\r\n");
        assert_eq!(one(&a).dst, ct.orig.dst);
        // Without NAT the same.
        let mut c = Conn::v4().warmed();
        nothing(&c.server(b"550 foo\n227 Entering Passive Mode (192,168,1,20,0,22)\r\n"));
        assert_eq!(one(&c.server(b"227 (192,168,1,20,4,1)\r\n")).dst_port, 1025);
    }

    #[test]
    fn multiline_reply_body_in_the_next_segment_is_not_parsed() {
        // Each segment starts at a recorded line start, but the body of a multi-line
        // reply is text (a file name, an echoed argument), not a reply.
        let mut c = Conn::v4().warmed();
        nothing(&c.server(b"211-Features:\r\n"));
        nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,1)\r\n"));
        nothing(&c.server(b"229 Entering Extended Passive Mode (|||1026|)\r\n"));
        nothing(&c.server(b"211-still the body\r\n"));
        nothing(&c.server(b"2110 not the end\r\n"));
        // The closing line "211 " ends the reply; the next reply is parsed again.
        nothing(&c.server(b"211 End\r\n"));
        let a = c.server(b"227 Entering Passive Mode (192,168,1,20,4,3)\r\n");
        assert_eq!(one(&a).dst_port, 1027);
    }

    #[test]
    fn multiline_reply_split_anywhere_is_followed() {
        let mut c = Conn::v4().warmed();
        // Segment boundaries inside lines, as a long STAT reply is cut at the MSS.
        nothing(&c.server(b"213-Status of /:\r\n-rw-r--r-- 1 ftp ftp 0 a\r\n-rw-r"));
        nothing(&c.server(b"--r-- 1 ftp ftp 0 b\r\n"));
        nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,1)\r\n"));
        // A line that starts like the closing line but is not one ("21" + "39 ...").
        nothing(&c.server(b"21"));
        nothing(&c.server(b"39 bytes\r\n"));
        nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,2)\r\n"));
        // The closing line cut after its first two digits.
        nothing(&c.server(b"-rw-r--r-- 1 ftp ftp 0 c\r\n21"));
        nothing(&c.server(b"3 End of status\r\n"));
        let a = c.server(b"227 Entering Passive Mode (192,168,1,20,4,3)\r\n");
        assert_eq!(one(&a).dst_port, 1027);
        // A multi-line reply opened on a later line of a segment counts too.
        nothing(&c.server(b"200 ok\r\n211-Features:\r\n"));
        nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,4)\r\n"));
    }

    #[test]
    fn retransmitted_multiline_body_stays_body() {
        // The client withholds its ACK and the server sends a segment again: the line
        // start it begins at must be judged as it was the first time.
        let mut c = Conn::v4().warmed();
        nothing(&c.server(b"211-Features:\r\n"));
        let body = c.next_seq[1];
        nothing(&c.server(b"227 (192,168,1,20,4,1)\r\n211 End\r\n"));
        nothing(&c.send_at(
            Direction::Reply,
            body,
            b"227 (192,168,1,20,4,1)\r\n211 End\r\n",
        ));
        // After the closing line, replies are parsed again.
        assert_eq!(one(&c.server(b"227 (192,168,1,20,4,2)\r\n")).dst_port, 1026);
    }

    #[test]
    fn closing_line_of_a_multiline_227_is_parsed() {
        // RFC 959 allows a multi-line 227; its last line "227 " is a reply line.
        let mut c = Conn::v4().warmed();
        nothing(&c.server(b"227-Entering Passive Mode\r\n"));
        assert_eq!(one(&c.server(b"227 (192,168,1,20,4,1)\r\n")).dst_port, 1025);
    }

    #[test]
    fn multiline_reply_body_is_not_parsed() {
        let mut c = Conn::v4().warmed();
        let a = c.server(
            b"230-Welcome\r\n227 (192,168,1,20,4,1)\r\n230 Logged in\r\n227 (192,168,1,20,4,2)\r\n",
        );
        // Only the first line of a segment is parsed, and here it opens a multi-line reply.
        nothing(&a);
        let a = c.server(b"227-Entering Passive Mode\r\n227 (192,168,1,20,4,3)\r\n");
        nothing(&a);
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
        let a = Ftp.analyse(
            &pkt,
            &c.ct,
            &mut private,
            &mut Store::default(),
            Policy::default(),
        );
        assert!(!a.private_changed);
        let pkt = Packet {
            transport: Transport::Tcp {
                seq: 1,
                flags: 0x10,
            },
            payload: b"",
            ..pkt
        };
        assert!(
            !Ftp.analyse(
                &pkt,
                &c.ct,
                &mut private,
                &mut Store::default(),
                Policy::default()
            )
            .private_changed
        );
    }

    #[test]
    fn segment_at_an_unknown_position_keeps_the_multiline_state() {
        // The client acknowledges only part of a multi-line reply and the server sends the
        // rest again from there: a segment that starts mid-line, at no recorded position.
        // Its end is a line start (as in the kernel), still inside the reply.
        let mut c = Conn::v4().warmed();
        nothing(&c.server(b"213-Status:\r\n"));
        let seq = c.next_seq[1].wrapping_add(100);
        nothing(&c.send_at(Direction::Reply, seq, b"ile1\r\n"));
        let seq = seq.wrapping_add(6);
        let body = b"227 (192,168,1,20,4,1)\r\n";
        nothing(&c.send_at(Direction::Reply, seq, body));
        // The closing line ends it, as anywhere.
        let seq = seq.wrapping_add(body.len() as u32);
        nothing(&c.send_at(Direction::Reply, seq, b"213 End\r\n"));
        let a = c.send_at(Direction::Reply, seq.wrapping_add(9), body);
        assert_eq!(one(&a).dst_port, 1025);
    }

    #[test]
    fn low_ports_are_refused_on_a_port_forward_unless_allowed() {
        let ct = port_forwarded();
        let mut c = Conn::new(ct).warmed();
        for (seg, what, port) in [
            (
                &b"227 Entering Passive Mode (198,51,100,2,0,22)\r\n"[..],
                "227",
                22,
            ),
            (
                b"229 Entering Extended Passive Mode (|||1023|)\r\n",
                "229",
                1023,
            ),
        ] {
            let a = c.server(seg);
            assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
            assert_eq!(a.refusals.len(), 1, "{a:?}");
            let r = a.refusals[0];
            assert_eq!(
                (r.reason, r.what, r.port),
                (RefusalReason::LowPort, what, port)
            );
        }
        assert_eq!(one(&c.server(b"229 (|||1024|)\r\n")).dst_port, 1024);
        // The outside client asking the server to connect to its own port 80.
        let a = c.client(b"PORT 203,0,113,9,0,80\r\n");
        assert_eq!(a.refusals[0].reason, RefusalReason::LowPort);
        // Configured to allow them.
        c.policy = Policy {
            allow_low_ports: true,
        };
        let a = c.server(b"227 Entering Passive Mode (198,51,100,2,0,22)\r\n");
        assert_eq!(one(&a).dst_port, 22);
        // Without destination NAT the policy does not apply (a masqueraded client may
        // announce any port of its own).
        let (cli, public, srv) = MASQ4;
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        assert_eq!(one(&c.client(b"PORT 192,0,2,2,0,80\r\n")).dst_port, 80);
        let mut c = Conn::v4().warmed();
        assert_eq!(one(&c.server(b"227 (192,168,1,20,0,22)\r\n")).dst_port, 22);
    }

    #[test]
    fn private_data_written_before_multiline_tracking_still_decodes() {
        // Layout 1 as written when bytes 20..32 were reserved (zero).
        let mut old = [0u8; PRIVATE_LEN];
        old[..4].copy_from_slice(&[LAYOUT_VERSION, 2, 1, 0]);
        old[4..8].copy_from_slice(&100u32.to_be_bytes());
        old[8..12].copy_from_slice(&200u32.to_be_bytes());
        old[12..16].copy_from_slice(&300u32.to_be_bytes());
        let st = State::decode(&old);
        assert!(st.at_line_start(Direction::Original, 100));
        assert!(st.at_line_start(Direction::Original, 200));
        assert_eq!(
            st.line_start(Direction::Reply, 300),
            Some(0),
            "no multi-line reply"
        );
        assert_eq!(st.cursor, None);
        let mut again = old;
        assert!(!st.encode(&mut again), "re-encodes to the same bytes");
    }

    #[test]
    fn multiline_state_in_private_data() {
        let mut c = Conn::v4().warmed();
        nothing(&c.server(b"211-Features:\r\n"));
        let at = c.next_seq[1];
        let st = State::decode(&c.private);
        assert_eq!(st.line_start(Direction::Reply, at), Some(211));
        assert_eq!(
            st.cursor,
            Some(Cursor {
                seq: at,
                line: Line::start(211)
            })
        );
        // Reply line starts [greeting end: none, here: 211], cursor here, at a line start.
        assert_eq!(&c.private[20..24], &[0, 0, 0, 211]);
        assert_eq!(&c.private[24..28], &at.to_be_bytes());
        assert_eq!(&c.private[28..32], &[0, 211, 0, 1]);
        assert_eq!(c.private[3], FLAG_CURSOR);
        // Cut after the first two digits of what may be the closing line.
        nothing(&c.server(b" EPSV\r\n21"));
        let st = State::decode(&c.private);
        let line = Line::Head {
            code: 211,
            len: 2,
            digits: 21,
        };
        assert_eq!(st.cursor.map(|c| c.line), Some(line));
        assert_eq!(&c.private[28..32], &[0, 211, 0x07, 0xe6], "1 + 2000 + 21");
        let mut again = c.private;
        assert!(!st.encode(&mut again));
        // Impossible values are not trusted: the whole area reads as fresh.
        for (off, bytes) in [
            (22, [0x03, 0xe8]), // code 1000
            (22, [0, 50]),      // code 50
            (28, [0x03, 0xe8]), // cursor code 1000
            (30, [0x13, 0x88]), // head 5000
            (30, [0x07, 0xd6]), // 1 + 2000 + 5: two digits "05"
        ] {
            let mut bad = c.private;
            bad[off..off + 2].copy_from_slice(&bytes);
            assert_eq!(State::decode(&bad), State::default(), "{off} {bytes:?}");
        }
    }

    #[test]
    fn multiline_line_rules() {
        let after = |code: u16, line: &[u8]| Line::start(code).feed_all(line).end();
        assert_eq!(after(0, b"211-Features"), 211);
        assert_eq!(after(0, b"211 one line"), 0);
        assert_eq!(after(0, b"011-x"), 0, "not a reply code");
        assert_eq!(after(0, b"21-x"), 0);
        assert_eq!(after(211, b"211 End"), 0);
        assert_eq!(after(211, b"211"), 0, "a closing line without text");
        assert_eq!(after(211, b"211\r"), 0);
        assert_eq!(after(211, b"211-more"), 211);
        assert_eq!(after(211, b"2110"), 211);
        assert_eq!(after(211, b"212 End"), 211);
        assert_eq!(after(211, b" 211 End"), 211);
        assert_eq!(after(211, b""), 211);
        // The same, fed in pieces.
        assert_eq!(track(Line::start(211), b"21").feed_all(b"1 x").end(), 0);
        assert_eq!(track(Line::start(0), b"2").feed_all(b"27-").end(), 227);
        assert_eq!(
            track(Line::start(0), b"x\n150-a\nb\n150 c\n226-d\n"),
            Line::start(226)
        );
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
        assert!(
            !Ftp.analyse(
                &pkt,
                &c.ct,
                &mut short,
                &mut Store::default(),
                Policy::default()
            )
            .private_changed
        );
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

    /// The one rewrite of a plan: the text it replaces, and what it writes with the
    /// announced port.
    fn one_rewrite(a: &Plan, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        assert_eq!(a.rewrites.len(), 1, "{a:?}");
        let rw = a.rewrites[0];
        let Replacement::Endpoint {
            expectation: 0,
            spelling,
        } = rw.with
        else {
            panic!("not an endpoint of the first expectation: {rw:?}");
        };
        let mut out = [0u8; crate::nat::REPLACEMENT_MAX];
        let n = crate::nat::endpoint_text(a, spelling, one(a).dst_port, &mut out).unwrap();
        (payload[rw.start..rw.end].to_vec(), out[..n].to_vec())
    }

    /// An endpoint as `text` spells it for a NAT rewrite, with `port`.
    fn spelled(text: EndpointText, addr: IpAddr, port: u16) -> Option<Vec<u8>> {
        let mut plan = Plan::default();
        let spelling = text.spelling(addr, &mut plan)?;
        let mut out = [0u8; crate::nat::REPLACEMENT_MAX];
        let n = crate::nat::endpoint_text(&plan, spelling, port, &mut out).unwrap();
        Some(out[..n].to_vec())
    }

    #[test]
    fn endpoint_spellings() {
        let a = v4([203, 0, 113, 1]);
        let commas = |port| spelled(EndpointText::Commas, a, port).unwrap();
        assert_eq!(commas(40000), b"203,0,113,1,156,64");
        assert_eq!(commas(1), b"203,0,113,1,0,1");
        let eprt = |delim, addr, port| spelled(EndpointText::Eprt { delim }, addr, port).unwrap();
        assert_eq!(eprt(b'|', a, 65535), b"|1|203.0.113.1|65535|");
        let six = v6("2001:db8:ffff::1");
        assert_eq!(eprt(b'!', six, 21), b"!2!2001:db8:ffff::1!21!");
        assert_eq!(spelled(EndpointText::Port, six, 50001).unwrap(), b"50001");
        assert_eq!(spelled(EndpointText::Commas, six, 1), None);
        // The longest text there is fits.
        let longest = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert_eq!(eprt(b'|', longest, 65535).len(), 3 + 39 + 7);
    }

    #[test]
    fn the_search_table_matches_each_pattern_in_its_direction_only() {
        let lines: [(&[u8], Direction); 4] = [
            (b"port 192,168,1,10,4,1", Direction::Original),
            (b"EPRT |1|192.168.1.10|1025|", Direction::Original),
            (b"227 (192,168,1,20,4,1)", Direction::Reply),
            (b"229 (|||1025|)", Direction::Reply),
        ];
        for (s, (line, dir)) in SEARCH.iter().zip(lines) {
            assert_eq!(s.dir, dir);
            let args = s.arguments(line).expect("recognised");
            let ann = (s.parse)(args).expect("parsed");
            assert_eq!(ann.port, 1025, "{}", s.what);
            let others = SEARCH.iter().filter(|o| o.pattern != s.pattern);
            assert!(others.into_iter().all(|o| o.arguments(line).is_none()));
        }
        // A longer word is not a verb; a bare verb is (with malformed arguments); reply
        // codes need their space.
        assert!(SEARCH[0].arguments(b"PORTAL 1").is_none());
        assert_eq!(SEARCH[0].arguments(b"PORT"), Some(&b""[..]));
        assert!(SEARCH[2].arguments(b"227").is_none());
        assert!(SEARCH[2].arguments(b"227-(1,2,3,4,5,6)").is_none());
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
        let (text, new) = one_rewrite(&a, line);
        assert_eq!(text, b"192,0,2,2,156,64");
        assert_eq!(new, b"203,0,113,1,156,64", "commas, the public address");
    }

    #[test]
    fn nat_eprt_rewrite_covers_delimiters_and_keeps_the_senders() {
        let (cli, public, srv) = MASQ4;
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        let line = b"EPRT !1!192.0.2.2!40001!  \r\n";
        let a = c.client(line);
        assert_eq!(one(&a).dst_port, 40001);
        let (text, new) = one_rewrite(&a, line);
        assert_eq!(text, b"!1!192.0.2.2!40001!");
        assert_eq!(new, b"!1!203.0.113.1!40001!", "the sender's delimiter");
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
        let (text, new) = one_rewrite(&a, line);
        assert_eq!(text, b"|2|2001:db8:1::2|40002|");
        assert_eq!(new, b"|2|2001:db8:ffff::1|40002|");
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
        let (text, new) = one_rewrite(&a, line);
        assert_eq!(text, b"198,51,100,2,195,80");
        assert_eq!(ct.orig.dst, v4([192, 0, 2, 1]));
        assert_eq!(new, b"192,0,2,1,195,80", "the forwarded address");
    }

    #[test]
    fn nat_229_rewrites_the_port_digits_only() {
        let mut c = Conn::new(port_forwarded()).warmed();
        let line = b"229 Entering Extended Passive Mode (|||50001|)\r\n";
        let a = c.server(line);
        assert_eq!(one(&a).dst_port, 50001);
        let (text, new) = one_rewrite(&a, line);
        assert_eq!(text, b"50001");
        assert_eq!(new, b"50001", "the port alone");
    }

    #[test]
    fn nat_only_the_first_announcement_of_a_segment_is_rewritten() {
        // Later lines are not parsed (as in the kernel), so they are not rewritten either:
        // the inside address in the EPRT goes out as the client wrote it, and no
        // expectation stands behind it.
        let (cli, public, srv) = MASQ4;
        let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
        let seg = b"PORT 192,0,2,2,0,21\r\nNOOP\r\nEPRT |1|192.0.2.2|22|\r\n";
        let a = c.client(seg);
        assert_eq!(one(&a).dst_port, 21);
        let (text, new) = one_rewrite(&a, seg);
        assert_eq!(text, b"192,0,2,2,0,21");
        assert_eq!(new, b"203,0,113,1,0,21");
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
