// SPDX-License-Identifier: GPL-2.0-or-later
//! bench/packet_path.rs — the user-space half of the packet path, timed (a benchmark,
//! not a test: it prints and asserts nothing).
//!
//!   cargo run --release --example packet-path [-- ROUNDS]
//!
//! Serves the queue messages Debian's 6.1 kernel really sent to cthelperd (the
//! recording of tests/data/netlink/, FTP over IPv4 and IPv6 loopback: PORT, EPSV and
//! EPRT sessions, each packet with its conntrack) through the daemon's own packet path
//! (`PacketPath::serve_batch`: decode, helper, private data, expectations, verdict
//! encoding) ROUNDS times, behind links that hand the datagrams out and ACK every
//! request at once. What it leaves out is the kernel: no system call, no copy, no
//! reinjection. So it measures what the build profile (opt-level) changes, and nothing
//! a VM benchmark (bench/ftp-bench.sh) would need to add. bench/opt-levels.sh runs it
//! for each opt-level next to the router binary's size.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Instant;

use cthelperd::config::Config;
use cthelperd::daemon::PacketPath;
use cthelperd::netlink::msg::{Messages, NLM_F_ACK};
use cthelperd::netlink::socket::{IoError, Link};

const RECORDING: &[u8] = include_bytes!("../tests/data/netlink/queue-ftp-loopback.bin");
/// Packets handed out per wake-up (the daemon's greedy batches take them all).
const BURST: usize = 8;

/// Length-prefixed (u32, host order) datagrams of the recording.
fn datagrams(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some(d) = tail.get(..len) else { break };
        out.push(d);
        rest = &tail[len..];
    }
    out
}

/// The queue socket: the recording's datagrams, `BURST` per wake-up; verdicts counted.
struct Queue<'a> {
    datagrams: &'a [&'a [u8]],
    next: Cell<usize>,
    end: Cell<usize>,
    verdict_bytes: Cell<usize>,
}

impl Link for Queue<'_> {
    fn next_seq(&mut self) -> u32 {
        0
    }
    fn send(&self, bytes: &[u8]) -> Result<(), IoError> {
        self.verdict_bytes
            .set(self.verdict_bytes.get() + bytes.len());
        Ok(())
    }
    fn recv<'b>(&self, buf: &'b mut [u8], nonblocking: bool) -> Result<Option<&'b [u8]>, IoError> {
        let i = self.next.get();
        if i >= self.end.get() {
            return if nonblocking {
                Ok(None)
            } else {
                Err(IoError::Timeout)
            };
        }
        self.next.set(i + 1);
        let d = self.datagrams[i];
        let out = buf.get_mut(..d.len()).ok_or(IoError::Timeout)?;
        out.copy_from_slice(d);
        Ok(Some(out))
    }
}

/// The control socket: every request that asks for one gets an ACK (errno 0).
struct Ctl {
    seq: u32,
    acks: RefCell<VecDeque<[u8; 36]>>,
    requests: Cell<usize>,
}

impl Link for Ctl {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
    fn send(&self, bytes: &[u8]) -> Result<(), IoError> {
        for msg in Messages::new(bytes).flatten() {
            self.requests.set(self.requests.get() + 1);
            if msg.header.flags & NLM_F_ACK != 0 {
                // struct nlmsghdr (NLMSG_ERROR) + struct nlmsgerr { error 0, request header }
                let mut ack = [0u8; 36];
                ack[..4].copy_from_slice(&36u32.to_ne_bytes());
                ack[4..6].copy_from_slice(&2u16.to_ne_bytes());
                ack[8..12].copy_from_slice(&msg.header.seq.to_ne_bytes());
                let h = &msg.header;
                ack[20..24].copy_from_slice(&h.len.to_ne_bytes());
                ack[24..26].copy_from_slice(&h.kind.to_ne_bytes());
                ack[26..28].copy_from_slice(&h.flags.to_ne_bytes());
                ack[28..32].copy_from_slice(&h.seq.to_ne_bytes());
                ack[32..36].copy_from_slice(&h.pid.to_ne_bytes());
                self.acks.borrow_mut().push_back(ack);
            }
        }
        Ok(())
    }
    fn recv<'b>(&self, buf: &'b mut [u8], _nonblocking: bool) -> Result<Option<&'b [u8]>, IoError> {
        let ack = self.acks.borrow_mut().pop_front().ok_or(IoError::Timeout)?;
        let out = buf.get_mut(..ack.len()).ok_or(IoError::Timeout)?;
        out.copy_from_slice(&ack);
        Ok(Some(out))
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let datagrams = datagrams(RECORDING);
    // Recorded when the default queue_base was 0 (every packet says queue 0).
    let cfg = Config {
        queue_base: 0,
        ..Config::default()
    };
    let queue = Queue {
        datagrams: &datagrams,
        next: Cell::new(0),
        end: Cell::new(0),
        verdict_bytes: Cell::new(0),
    };
    let mut ctl = Ctl {
        seq: 0,
        acks: RefCell::new(VecDeque::new()),
        requests: Cell::new(0),
    };
    let mut served = 0usize;
    let mut best = f64::MAX;
    let (mut verdict_errors, mut unhandled) = (0, 0);
    for round in 0..rounds {
        // A fresh path each round (its private-data cache and stores empty), so that
        // every round does what the first did: the recorded private data is from then.
        let mut path = PacketPath::new(&cfg).expect("the default configuration");
        queue.next.set(0);
        let start = Instant::now();
        while queue.next.get() < datagrams.len() {
            queue
                .end
                .set((queue.next.get() + BURST).min(datagrams.len()));
            while queue.next.get() < queue.end.get() {
                match path.serve_batch(&queue, &mut ctl, true) {
                    Ok(n) => served += n,
                    Err(e) => {
                        eprintln!("round {round}: {e:?}");
                        queue.next.set(queue.end.get());
                    }
                }
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / datagrams.len() as f64;
        best = best.min(ns);
        let (e, u) = path.counters();
        verdict_errors += e;
        unhandled += u;
    }
    println!(
        "packets per round {}, rounds {rounds}, served {served}, control requests {}, \
         verdict bytes {}, unhandled {unhandled}, verdict errors {verdict_errors}",
        datagrams.len(),
        ctl.requests.get(),
        queue.verdict_bytes.get()
    );
    println!("best round: {best:.0} ns per packet");
}
