//! SIP over TCP: where messages start in a byte stream, and the bytes of a message split
//! across segments, within a fixed budget.
//!
//! The kernel's helper parses SIP at the start of any segment — the door NAT
//! Slipstreaming walked through (SIP text in an HTTP body, aligned to a segment start).
//! Here a direction of a connection is parsed only if its first bytes were a SIP start
//! line, and then only from message starts: the position after each complete message
//! (headers plus Content-Length body) is the next message start. A gap (a segment after
//! one we never saw) loses the position for good: nothing of that direction is parsed
//! again, because after a gap a segment that begins with SIP text may as well be inside a
//! body. A message longer than one segment is kept in a fixed pool of buffers until it is
//! complete; a pool that is full or a message larger than a buffer loses the position too
//! (counted, never a partial parse).
//!
//! The position lives in the conntrack's private data ([`DirState`], 5 bytes a
//! direction), so a daemon restart keeps it; the pooled bytes do not survive a restart,
//! which then loses the position of a direction that had a partial message pending.

use super::message::{Error, Framing, Message};

/// Buffers for messages split across segments, shared by all connections.
pub const STREAM_SLOTS: usize = 16;
/// Largest message (headers and body) that can be reassembled.
pub const STREAM_BUF: usize = 4096;
/// Bytes of private data one direction's position takes.
pub const DIR_STATE_LEN: usize = 5;

/// Where a direction of a stream stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// No data seen yet.
    #[default]
    Unknown,
    /// The first bytes were SIP; `next` is where the next unparsed byte is (a message
    /// start, or the continuation of the pooled partial message).
    Sip,
    /// The first bytes were not SIP: never parsed.
    NotSip,
    /// The position was lost (a gap, a message too large): never parsed again.
    Lost,
}

/// One direction's position (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirState {
    pub phase: Phase,
    /// Sequence number of the next byte not yet consumed.
    pub next: u32,
}

impl DirState {
    pub fn encode(&self, out: &mut [u8]) {
        let Some(out) = out.get_mut(..DIR_STATE_LEN) else {
            return;
        };
        out[0] = match self.phase {
            Phase::Unknown => 0,
            Phase::Sip => 1,
            Phase::NotSip => 2,
            Phase::Lost => 3,
        };
        out[1..5].copy_from_slice(&self.next.to_be_bytes());
    }

    /// How many leading bytes of a `len`-byte segment at `seq` were consumed already (a
    /// partial retransmission; `feed` takes only the rest). 0 unless the direction is
    /// being parsed.
    pub fn retransmitted(&self, seq: u32, len: usize) -> usize {
        if self.phase != Phase::Sip {
            return 0;
        }
        let behind = self.next.wrapping_sub(seq) as i32;
        usize::try_from(behind).map_or(0, |b| b.min(len))
    }

    pub fn decode(bytes: &[u8]) -> DirState {
        let Some(b) = bytes.get(..DIR_STATE_LEN) else {
            return DirState::default();
        };
        let phase = match b[0] {
            1 => Phase::Sip,
            2 => Phase::NotSip,
            3 => Phase::Lost,
            _ => Phase::Unknown,
        };
        DirState {
            phase,
            next: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
        }
    }
}

/// Which direction of which conntrack a pooled message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamKey {
    pub conntrack: u32,
    pub reply: bool,
}

struct Slot {
    key: Option<StreamKey>,
    len: usize,
    /// Resident only once a message was pooled in it (`crate::lazy_buf`).
    data: crate::lazy_buf::LazyBuf,
}

/// The reassembly buffers (allocated once).
pub struct Pool {
    slots: Box<[Slot]>,
    /// Partial messages that found no free buffer, or outgrew one.
    pub overflows: u64,
    /// Gaps and other losses of a stream position.
    pub lost: u64,
}

impl core::fmt::Debug for Pool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pool")
            .field(
                "in_use",
                &self.slots.iter().filter(|s| s.key.is_some()).count(),
            )
            .field("overflows", &self.overflows)
            .field("lost", &self.lost)
            .finish()
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

/// What happened to a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed: `consumed` bytes of complete messages (pooled and new), `pending` bytes
    /// of a partial one kept for the next segment.
    Parsed { consumed: usize, pending: usize },
    /// Already seen (a retransmission), or a direction that is not parsed.
    Skipped,
    /// Not SIP from the first byte: this direction is never parsed.
    NotSip,
    /// The position was lost now (gap, overflow, a malformed message).
    Lost,
}

/// SIP methods (RFC 3261 and the extensions in common use) a stream may begin with.
const METHODS: [&[u8]; 14] = [
    b"INVITE",
    b"ACK",
    b"BYE",
    b"CANCEL",
    b"REGISTER",
    b"OPTIONS",
    b"PRACK",
    b"UPDATE",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"REFER",
    b"MESSAGE",
    b"INFO",
    b"PUBLISH",
];
const STATUS_PREFIX: &[u8] = b"SIP/2.0 ";
const URI_SCHEMES: [&[u8]; 3] = [b"sip:", b"sips:", b"tel:"];

/// Whether `a` and `b` agree on their common length (one can still become the other).
fn prefix_compatible(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a.get(..n) == b.get(..n)
}

/// Does `bytes` begin with a SIP start line, or the beginning of one? A whole first line
/// must be a status line or end in " SIP/2.0"; a first line still incomplete must be
/// able to become a status line or a request line of a known method with a sip:, sips:
/// or tel: URI. Anything else (HTTP, TLS, binary) makes the stream not SIP.
pub fn starts_like_sip(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(bytes.len());
    let rest = bytes.get(start..).unwrap_or(&[]);
    let line_end = rest.iter().position(|&b| b == b'\n');
    let line = rest.get(..line_end.unwrap_or(rest.len())).unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return false;
    }
    if prefix_compatible(line, STATUS_PREFIX) {
        return line_end.is_none() || line.starts_with(STATUS_PREFIX);
    }
    let Some(method) = METHODS.iter().find(|m| prefix_compatible(line, m)) else {
        return false;
    };
    let Some(after) = line.get(method.len()..) else {
        // Only part of the method so far.
        return line_end.is_none();
    };
    let Some(uri) = after.strip_prefix(b" ") else {
        return after.is_empty() && line_end.is_none();
    };
    if !URI_SCHEMES.iter().any(|s| prefix_compatible(uri, s)) {
        return false;
    }
    line_end.is_none() || line.ends_with(b" SIP/2.0")
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            slots: (0..STREAM_SLOTS)
                .map(|_| Slot {
                    key: None,
                    len: 0,
                    data: crate::lazy_buf::LazyBuf::zeroed(STREAM_BUF),
                })
                .collect(),
            overflows: 0,
            lost: 0,
        }
    }

    fn slot_of(&self, key: StreamKey) -> Option<usize> {
        self.slots.iter().position(|s| s.key == Some(key))
    }

    fn release(&mut self, key: StreamKey) {
        if let Some(i) = self.slot_of(key) {
            self.slots[i].key = None;
            self.slots[i].len = 0;
        }
    }

    /// Bytes pooled for `key`.
    pub fn pending(&self, key: StreamKey) -> usize {
        self.slot_of(key).map_or(0, |i| self.slots[i].len)
    }

    /// Feed one TCP segment of one direction. `parse` is called once with contiguous
    /// bytes that start at a message start, and the offset of the segment's payload in
    /// them (the pooled bytes come first); it handles every complete message, e.g. with
    /// [`complete_messages`], and returns how many bytes they took.
    pub fn feed(
        &mut self,
        st: &mut DirState,
        key: StreamKey,
        seq: u32,
        payload: &[u8],
        mut parse: impl FnMut(&[u8], usize) -> Result<usize, Error>,
    ) -> Outcome {
        if payload.is_empty() {
            return Outcome::Skipped;
        }
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        match st.phase {
            Phase::NotSip | Phase::Lost => return Outcome::Skipped,
            Phase::Unknown => {
                if !starts_like_sip(payload) {
                    st.phase = Phase::NotSip;
                    return Outcome::NotSip;
                }
                st.phase = Phase::Sip;
                st.next = seq;
            }
            Phase::Sip => {
                let ahead = seq.wrapping_sub(st.next) as i32;
                if ahead > 0 {
                    return self.lose(st, key);
                }
                // Wholly before `next`: a retransmission of what was consumed.
                let end_ahead = seq.wrapping_add(len).wrapping_sub(st.next) as i32;
                if end_ahead <= 0 {
                    return Outcome::Skipped;
                }
                if ahead < 0 {
                    // Partly retransmitted: take only the new bytes.
                    let skip = ahead.unsigned_abs() as usize;
                    let Some(rest) = payload.get(skip..) else {
                        return Outcome::Skipped;
                    };
                    return self.feed(st, key, st.next, rest, parse);
                }
            }
        }
        let pooled = self.slot_of(key);
        let (consumed, total) = match pooled {
            None => match parse(payload, 0) {
                Ok(n) => (n.min(payload.len()), payload.len()),
                Err(_) => return self.lose(st, key),
            },
            Some(i) => {
                let have = self.slots[i].len;
                let Some(dst) = self.slots[i].data.get_mut(have..have + payload.len()) else {
                    self.overflows += 1;
                    return self.lose(st, key);
                };
                dst.copy_from_slice(payload);
                let total = have + payload.len();
                self.slots[i].len = total;
                let Some(data) = self.slots[i].data.get(..total) else {
                    return self.lose(st, key);
                };
                match parse(data, have) {
                    Ok(n) => (n.min(total), total),
                    Err(_) => return self.lose(st, key),
                }
            }
        };
        st.next = seq.wrapping_add(len);
        let left = total - consumed;
        if left == 0 {
            self.release(key);
            return Outcome::Parsed {
                consumed,
                pending: 0,
            };
        }
        // Keep the partial message (at the end of what we had) for the next segment.
        let slot = match pooled.or_else(|| self.slots.iter().position(|s| s.key.is_none())) {
            Some(i) => i,
            None => {
                self.overflows += 1;
                return self.lose(st, key);
            }
        };
        if left > STREAM_BUF {
            self.overflows += 1;
            return self.lose(st, key);
        }
        if pooled.is_some() {
            self.slots[slot].data.copy_within(consumed..total, 0);
        } else {
            let Some(src) = payload.get(consumed..) else {
                return self.lose(st, key);
            };
            let Some(dst) = self.slots[slot].data.get_mut(..left) else {
                return self.lose(st, key);
            };
            dst.copy_from_slice(src);
        }
        self.slots[slot].key = Some(key);
        self.slots[slot].len = left;
        Outcome::Parsed {
            consumed,
            pending: left,
        }
    }

    fn lose(&mut self, st: &mut DirState, key: StreamKey) -> Outcome {
        self.release(key);
        st.phase = Phase::Lost;
        self.lost += 1;
        Outcome::Lost
    }

    /// Forget a conntrack's pooled bytes (it ended).
    pub fn forget(&mut self, conntrack: u32) {
        for reply in [false, true] {
            self.release(StreamKey { conntrack, reply });
        }
    }
}

/// Call `each` for every complete message at the start of `data`, in order, with its
/// offset; returns the bytes they took. A partial message at the end is left (the pool
/// keeps it); bytes that are not a message are an error (the stream is lost).
pub fn complete_messages(
    data: &[u8],
    mut each: impl FnMut(&Message<'_>, usize),
) -> Result<usize, Error> {
    let mut at = 0;
    while at < data.len() {
        let rest = data.get(at..).unwrap_or(&[]);
        match Message::parse(rest, Framing::Stream) {
            Ok(m) => {
                each(&m, at);
                at += m.len().max(1);
            }
            Err(Error::Incomplete) => {
                // Keep-alive CRLFs alone are consumed.
                if rest.iter().all(|&b| b == b'\r' || b == b'\n') {
                    at = data.len();
                }
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: StreamKey = StreamKey {
        conntrack: 7,
        reply: false,
    };

    fn msg(body: &str) -> Vec<u8> {
        format!(
            "MESSAGE sip:a@192.0.2.2 SIP/2.0\r\nCSeq: 1 MESSAGE\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Feed a segment; the message starts (offsets within the contiguous data) seen.
    fn feed(pool: &mut Pool, st: &mut DirState, seq: u32, seg: &[u8]) -> (Outcome, Vec<usize>) {
        let mut starts = Vec::new();
        let out = pool.feed(st, KEY, seq, seg, |data, _| {
            complete_messages(data, |_, at| starts.push(at))
        });
        (out, starts)
    }

    #[test]
    fn whole_messages_and_two_in_one_segment() {
        let mut pool = Pool::new();
        let mut st = DirState::default();
        let mut seg = msg("hi");
        let first = seg.len();
        seg.extend_from_slice(&msg("there"));
        let (out, starts) = feed(&mut pool, &mut st, 1000, &seg);
        assert_eq!(
            out,
            Outcome::Parsed {
                consumed: seg.len(),
                pending: 0
            }
        );
        assert_eq!(starts, vec![0, first]);
        assert_eq!((st.phase, st.next), (Phase::Sip, 1000 + seg.len() as u32));
    }

    #[test]
    fn a_message_split_across_segments_is_reassembled() {
        let mut pool = Pool::new();
        let mut st = DirState::default();
        let m = msg("0123456789");
        let (a, b) = m.split_at(40);
        let (out, starts) = feed(&mut pool, &mut st, 1, a);
        assert_eq!(
            out,
            Outcome::Parsed {
                consumed: 0,
                pending: 40
            }
        );
        assert!(starts.is_empty());
        assert_eq!(pool.pending(KEY), 40);
        let (out, starts) = feed(&mut pool, &mut st, 41, b);
        assert_eq!(
            out,
            Outcome::Parsed {
                consumed: m.len(),
                pending: 0
            }
        );
        assert_eq!(starts, vec![0]);
        assert_eq!(pool.pending(KEY), 0);
        // The body split from its headers too.
        let m = msg("body");
        let cut = m.len() - 2;
        feed(&mut pool, &mut st, 41 + b.len() as u32, &m[..cut]);
        let (_, starts) = feed(&mut pool, &mut st, 41 + (b.len() + cut) as u32, &m[cut..]);
        assert_eq!(starts, vec![0]);
    }

    #[test]
    fn sip_text_in_a_stream_that_began_otherwise_is_never_parsed() {
        // NAT Slipstreaming: an HTTP request to the SIP port carrying SIP text.
        let mut pool = Pool::new();
        let mut st = DirState::default();
        let (out, _) = feed(
            &mut pool,
            &mut st,
            1,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n",
        );
        assert_eq!(out, Outcome::NotSip);
        let (out, starts) = feed(&mut pool, &mut st, 50, &msg("x"));
        assert_eq!(out, Outcome::Skipped);
        assert!(starts.is_empty());
    }

    #[test]
    fn a_gap_loses_the_position_for_good() {
        let mut pool = Pool::new();
        let mut st = DirState::default();
        let m = msg("a");
        feed(&mut pool, &mut st, 1, &m);
        let (out, _) = feed(&mut pool, &mut st, 1 + m.len() as u32 + 10, &m);
        assert_eq!(out, Outcome::Lost);
        assert_eq!(pool.lost, 1);
        let (out, starts) = feed(&mut pool, &mut st, 1 + m.len() as u32, &m);
        assert_eq!(out, Outcome::Skipped);
        assert!(starts.is_empty());
    }

    #[test]
    fn retransmissions_are_not_parsed_twice_and_overlaps_are_trimmed() {
        let mut pool = Pool::new();
        let mut st = DirState::default();
        let m1 = msg("one");
        let m2 = msg("two");
        feed(&mut pool, &mut st, 1, &m1);
        let (out, starts) = feed(&mut pool, &mut st, 1, &m1);
        assert_eq!(out, Outcome::Skipped);
        assert!(starts.is_empty());
        // A segment repeating m1's tail and carrying m2.
        let mut seg = m1[m1.len() - 5..].to_vec();
        seg.extend_from_slice(&m2);
        let (out, starts) = feed(&mut pool, &mut st, 1 + m1.len() as u32 - 5, &seg);
        assert_eq!(
            out,
            Outcome::Parsed {
                consumed: m2.len(),
                pending: 0
            }
        );
        assert_eq!(starts, vec![0]);
    }

    #[test]
    fn oversized_messages_and_a_full_pool_lose_the_position() {
        let mut pool = Pool::new();
        let mut st = DirState::default();
        let big = msg(&"x".repeat(STREAM_BUF));
        let mut seq = 1;
        for chunk in big.chunks(1000) {
            let (out, _) = feed(&mut pool, &mut st, seq, chunk);
            seq += chunk.len() as u32;
            if out == Outcome::Lost {
                break;
            }
        }
        assert_eq!(st.phase, Phase::Lost);
        assert_eq!(pool.overflows, 1);
        assert_eq!(pool.pending(KEY), 0, "its buffer is free again");
        // Every buffer held by another connection: the next partial message is lost.
        let mut pool = Pool::new();
        let m = msg("abc");
        for c in 0..STREAM_SLOTS as u32 {
            let mut st = DirState::default();
            let key = StreamKey {
                conntrack: 100 + c,
                reply: false,
            };
            pool.feed(&mut st, key, 1, &m[..20], |d, _| {
                complete_messages(d, |_, _| {})
            });
        }
        let mut st = DirState::default();
        let (out, _) = feed(&mut pool, &mut st, 1, &m[..20]);
        assert_eq!(out, Outcome::Lost);
        pool.forget(100);
        let mut st = DirState::default();
        let (out, _) = feed(&mut pool, &mut st, 1, &m[..20]);
        assert_eq!(
            out,
            Outcome::Parsed {
                consumed: 0,
                pending: 20
            }
        );
    }

    #[test]
    fn garbage_after_a_message_loses_the_position() {
        let mut pool = Pool::new();
        let mut st = DirState::default();
        let mut seg = msg("a");
        seg.extend_from_slice(b"\x00\x01 garbage\r\n\r\n");
        let (out, starts) = feed(&mut pool, &mut st, 1, &seg);
        assert_eq!(out, Outcome::Lost);
        assert!(starts.len() <= 1);
    }

    #[test]
    fn state_round_trips_through_private_data() {
        let st = DirState {
            phase: Phase::Sip,
            next: 0xdead_beef,
        };
        let mut buf = [0u8; DIR_STATE_LEN];
        st.encode(&mut buf);
        assert_eq!(DirState::decode(&buf), st);
        assert_eq!(DirState::decode(&[9, 0, 0, 0, 1]).phase, Phase::Unknown);
        assert_eq!(DirState::decode(&[1]), DirState::default());
    }

    #[test]
    fn what_looks_like_a_sip_start() {
        for yes in [
            &b"INVITE sip:a@b SIP/2.0\r\n"[..],
            b"SIP/2.0 200 OK\r\n",
            b"\r\n\r\nREGISTER sip:x SIP/2.0\r\n",
            b"INVI",
            b"SIP/2",
            b"OPTIONS ",
            b"INVITE si",
            b"MESSAGE sip:a@192.0.2.2 SIP/2.0\r\n",
        ] {
            assert!(starts_like_sip(yes), "{:?}", core::str::from_utf8(yes));
        }
        for no in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1",
            b"POST",
            b"\x16\x03\x01",
            b"invite sip:a@b SIP/2.0\r\n",
            b"INVITE http://x/",
            b"INVITEX sip:a",
            b"INVITE sip:a@b HTTP/1.1\r\n",
            b"\r\n",
        ] {
            assert!(!starts_like_sip(no), "{:?}", no);
        }
    }
}
