//! The FTP helper's per-connection state, kept in the conntrack's private data: the
//! line starts of each direction and the multi-line reply tracking (see [`State`]).

use crate::model::Direction;
use crate::wire::text;

use super::{
    CODE_BYTES, CODE_DIGITS, DIRECTIONS, HEAD_SCALE, LAYOUT_VERSION, PRIVATE_LEN, SEQ_BYTES,
    SEQS_PER_DIR,
};

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
    pub(super) count: [u8; DIRECTIONS],
    pub(super) seqs: [[u32; SEQS_PER_DIR]; DIRECTIONS],
    /// Reply direction: the code of the multi-line reply a line starting at each recorded
    /// reply line start belongs to (0: none, the line starts a reply).
    pub(super) codes: [u16; SEQS_PER_DIR],
    /// The kernel's NF_CT_FTP_SEQ_PICKUP: parse the next segment in that direction even
    /// though its position is unknown. Only set for connections adopted mid-stream.
    pub(super) pickup: [bool; DIRECTIONS],
    /// Reply direction: where the newest reply segment ended, and the multi-line state
    /// there, so a reply cut in the middle of a line (a long STAT or FEAT answer cut at
    /// the MSS) is followed into the next segment.
    pub(super) cursor: Option<Cursor>,
}

/// The reply stream position after the newest reply segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) seq: u32,
    pub(super) line: Line,
}

/// Multi-line reply tracking (RFC 959 4.2) for one reply line: a line "ddd-" opens a
/// multi-line reply, whose body lines are text, and the line "ddd " (or "ddd" alone)
/// with the same code closes it. Only the first four bytes of a line decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// The line's first bytes are still coming: it belongs to the multi-line reply
    /// `code` (0: none), and began with `len` (at most 3) digits of value `digits`.
    Head { code: u16, len: u8, digits: u16 },
    /// The rest of the line does not matter: `next` is the code in force on the next line.
    Rest { next: u16 },
}

impl Line {
    pub(super) const fn start(code: u16) -> Line {
        Line::Head {
            code,
            len: 0,
            digits: 0,
        }
    }

    /// The next byte of the line (never its '\n').
    pub(super) fn feed(self, b: u8) -> Line {
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
    pub(super) fn feed_all(mut self, bytes: &[u8]) -> Line {
        for &b in bytes {
            if let Line::Rest { .. } = self {
                break;
            }
            self = self.feed(b);
        }
        self
    }

    /// The line ended: the code in force on the next line.
    pub(super) fn end(self) -> u16 {
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
    pub(super) fn after(code: u16, digits: u16, then: Option<u8>) -> u16 {
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
    pub(super) fn code(self) -> u16 {
        match self {
            Line::Head { code, .. } => code,
            Line::Rest { next } => next,
        }
    }

    pub(super) fn encode(self) -> (u16, u16) {
        match self {
            Line::Head { code, len, digits } => (code, 1 + HEAD_SCALE * u16::from(len) + digits),
            Line::Rest { next } => (next, 0),
        }
    }

    pub(super) fn decode(code: u16, head: u16) -> Option<Line> {
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

pub(super) fn valid_code(code: u16) -> bool {
    code == 0 || (100..=999).contains(&code)
}

/// Follow the multi-line state from `line` through `payload`. Only the first bytes of
/// each line are looked at.
pub(super) fn track(mut line: Line, payload: &[u8]) -> Line {
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

pub(super) const FLAG_CURSOR: u8 = 4;

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

    pub(super) fn try_decode(private: &[u8]) -> Option<State> {
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

    pub(super) fn valid(&self, dir: Direction) -> &[u32] {
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
    pub(super) fn line_start(&self, dir: Direction, seq: u32) -> Option<u16> {
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
    pub(super) fn record(&mut self, dir: Direction, seq: u32, code: u16) {
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
    pub(super) fn newest_reply_code(&self) -> u16 {
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
    pub(super) fn position(&mut self, dir: Direction, seq: u32) -> (bool, Line) {
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
pub(super) fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
