//! No allocation on the packet path (issue #17), proven over every capture: a counting
//! global allocator watches the daemon's packet handling while it serves every TCP/UDP
//! packet of the shared corpus and of the bundled captures (tests/data), and the test
//! asserts that not one allocation (nor free) happened after start-up.
//!
//! What runs is the daemon's own code (`daemon::PacketPath::serve_batch`, the
//! `Server::batch` that `Daemon::serve_batch` runs, over the slots, private-data cache and
//! buffers `Daemon::start` allocates): each packet arrives as the NFQNL_MSG_PACKET the
//! kernel would send, with NFQA_CT built per connection as `cthelperd replay` models
//! conntrack (5-tuple, direction from the first packet or SYN, SEEN_REPLY, the helper the
//! default firewall rules assign by port, a CTA_ID of its own; CONFIRMED once a verdict
//! accepted one of its packets), and is parsed, examined, answered (expectations,
//! deletions, NAT rewrites, sequence adjustments over ctnetlink) and given its verdict in
//! the verdict buffer. The packets come one per wake-up or in bursts (`WAKEUPS`), so
//! batches, the private-data cache and deferred expectations run. Every capture runs
//! twice: as captured, and with every connection NATed (even ones masqueraded, odd ones
//! port-forwarded), so the NAT port search and the rewrites run.
//!
//! Behind both sockets is a scripted kernel (`Kernel`) that allocates nothing either: it
//! keeps the private data each verdict writes and hands it back in the connection's next
//! PACKET, as the kernel does; it keeps the expectations created over ctnetlink or
//! attached to a verdict in a fixed table and answers EXP_NEW (EEXIST when exclusive and
//! taken, EMFILE when the table is full, ENOENT when the master is not confirmed yet),
//! EXP_GET (also the dump of one master's), EXP_DELETE, and CT GET/NEW (sequence
//! adjustment, private data) as ctnetlink would. Its work is counted too: nothing is
//! excluded from the window. What a real kernel would not have been asked (a request of
//! another kind, an expectation of an unconfirmed master, a packet left without exactly
//! one verdict) fails the test as well.
//!
//! Log level: trace, through the daemon's own syslog backend (`logging`), into a socket
//! a thread of this test drains. Every log statement on the path is formatted (a
//! superset of what the daemon's default level, info, formats), so zero here means zero
//! at any level. The count is per thread: the draining thread and libtest's are not
//! counted, the thread serving the packets is, from the first packet to the last.
//!
//! Set CTHELPERD_ALLOC_BACKTRACE=N to print the backtraces of the first N allocations
//! counted.
// Needs the library's capture reader (cargo feature `replay`, on by default).
#![cfg(feature = "replay")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use cthelperd::config::Config;
use cthelperd::daemon::PacketPath;
use cthelperd::helpers::PRIVATE_DATA_MAX;
use cthelperd::model::{IPPROTO_TCP, SeqAdj, Tuple, ctinfo, status};
use cthelperd::netlink::attr::{Attr, NLA_HDRLEN, Writer, align};
use cthelperd::netlink::ctnetlink::{
    self, CTA_EXPECT_MASTER, CTA_EXPECT_NAT, CTA_EXPECT_NAT_DIR, CTA_EXPECT_NAT_TUPLE,
    CTA_EXPECT_TUPLE, CTA_HELP, CTA_HELP_INFO, CTA_HELP_NAME, CTA_ID, CTA_SEQ_ADJ_ORIG,
    CTA_SEQ_ADJ_REPLY, CTA_SEQADJ_CORRECTION_POS, CTA_SEQADJ_OFFSET_AFTER,
    CTA_SEQADJ_OFFSET_BEFORE, CTA_STATUS, CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, IPCTNL_MSG_CT_GET,
    IPCTNL_MSG_CT_NEW, IPCTNL_MSG_EXP_DELETE, IPCTNL_MSG_EXP_GET, IPCTNL_MSG_EXP_NEW, put_tuple,
};
use cthelperd::netlink::msg::{
    Header, Message, Messages, NLM_F_ACK, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_EXCL, NLM_F_MULTI,
    NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NfGenMsg,
};
use cthelperd::netlink::socket::{IoError, Link};
use cthelperd::netlink::{nfnl_type, queue, subsys};
use cthelperd::replay::capture::Capture;
use cthelperd::replay::ingress::{Ingress, Seen};
use cthelperd::wire::{self, Transport, checksum};

// ------------------------------------------------------------------ counting allocator

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// usize, not u64: 32-bit MIPS has no 64-bit atomics (the suite runs there too).
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);
/// Backtraces still to print (CTHELPERD_ALLOC_BACKTRACE).
static BACKTRACES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (const-initialised, no destructor:
    /// reading it allocates nothing).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn allocated(size: usize) {
    if !counting() {
        return;
    }
    ALLOCATIONS.fetch_add(1, Relaxed);
    ALLOCATED_BYTES.fetch_add(size, Relaxed);
    if BACKTRACES.load(Relaxed) > 0 {
        BACKTRACES.fetch_sub(1, Relaxed);
        // The report allocates; that is not the packet path's.
        COUNTING.set(false);
        eprintln!(
            "allocation of {size} bytes on the packet path:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        COUNTING.set(true);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting
// touches only atomics and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        allocated(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            FREES.fetch_add(1, Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Run `f` with this thread's allocations counted.
fn counted<R>(f: impl FnOnce() -> R) -> R {
    COUNTING.set(true);
    let r = f();
    COUNTING.set(false);
    r
}

// ------------------------------------------------------------------ the scripted kernel

/// nfnetlink_queue attributes (include/uapi/linux/netfilter/nfnetlink_queue.h).
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CT: u16 = 11;
const NFQA_CT_INFO: u16 = 12;
const NFQA_EXP: u16 = 15;
/// NF_INET_POST_ROUTING: where nf_confirm queues a forwarded packet.
const HOOK_POSTROUTING: u8 = 4;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const EMFILE: i32 = 24;
const EOPNOTSUPP: i32 = 95;

/// Pending expectations the kernel holds at most (nf_conntrack_expect_max, 4 per 256
/// conntrack hash buckets: 8 with 512 buckets); beyond it a new one is refused with
/// EMFILE. None expires or is used here, so busy captures reach it and the daemon's
/// refusal paths run too (the error's log line, the NAT drop of an announcement left
/// without its expectation).
const EXPECTATIONS_MAX: usize = 8;
/// Room for the answers to one datagram of requests.
const REPLIES: usize = 256 * 1024;
/// The daemon's receive buffer (daemon::RX_BUF): a PACKET message must fit it.
const RX_BUF: usize = 0x10000 + 4096;

/// A pending expectation as the kernel keeps it.
#[derive(Clone, Copy, Debug)]
struct Pending {
    tuple: Tuple,
    master: Tuple,
    /// CTA_EXPECT_NAT: direction and the saved tuple, as the request gave them.
    nat: Option<(u32, Tuple)>,
}

/// A conntrack as the kernel keeps it.
#[derive(Clone, Copy, Debug)]
struct Conn {
    orig: Tuple,
    reply: Tuple,
    /// A packet of it was handed to the daemon.
    started: bool,
    /// A verdict accepted one of its packets (nf_confirm inserted it).
    confirmed: bool,
    private: [u8; PRIVATE_DATA_MAX],
    private_len: usize,
    seq_adj: [SeqAdj; 2],
}

/// What the scripted kernel saw.
#[derive(Clone, Copy, Debug, Default)]
struct Observed {
    verdicts: u64,
    /// NFQNL_MSG_VERDICT_BATCH messages (runs of plain accepts).
    batch_verdicts: u64,
    drops: u64,
    /// Verdicts with a replacement packet.
    payloads: u64,
    private_updates: u64,
    attached: u64,
    exp_created: u64,
    exp_refreshed: u64,
    exp_eexist: u64,
    exp_table_full: u64,
    exp_deleted: u64,
    exp_gets: u64,
    exp_dumps: u64,
    enoent: u64,
    ct_gets: u64,
    ct_updates: u64,
    requests: u64,
}

struct Kernel {
    conns: Vec<Conn>,
    /// The conntrack of each packet id.
    conn_of_packet: Vec<usize>,
    /// The queue of each packet id.
    queue_of_packet: Vec<u16>,
    /// Packets handed out and not answered yet, in the order they were (ids; the
    /// capacity is reserved before serving, so this never allocates).
    waiting: Vec<usize>,
    /// Verdicts received per packet id.
    verdicts: Vec<u8>,
    /// The conntracks of the capture being served (index range into `conns`).
    scope: (usize, usize),
    expectations: Vec<Pending>,
    replies: Vec<u8>,
    head: usize,
    tail: usize,
    seen: Observed,
    /// Things a real kernel would not have been asked or would have answered otherwise.
    trouble: u64,
    first_trouble: Option<&'static str>,
}

fn attrs<'a, const N: usize>(msg: &Message<'a>) -> Option<[Option<Attr<'a>>; N]> {
    msg.nfnl().ok()?.1.table().ok()
}

fn nested<const N: usize>(a: Option<Attr<'_>>) -> Option<[Option<Attr<'_>>; N]> {
    a?.nested().table().ok()
}

fn tuple_in(t: &[Option<Attr<'_>>], kind: u16) -> Option<Tuple> {
    ctnetlink::parse_tuple(t.get(usize::from(kind)).copied().flatten()?).ok()
}

fn af(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 2 } else { 10 }
}

impl Kernel {
    fn troubled(&mut self, what: &'static str) {
        self.trouble += 1;
        self.first_trouble.get_or_insert(what);
    }

    /// A new capture: no expectations, its conntracks in scope.
    fn begin(&mut self, scope: (usize, usize)) {
        self.expectations.clear();
        self.scope = scope;
    }

    /// The conntrack with original tuple `t` that the daemon has seen (the newest, as
    /// a reused 5-tuple replaces the older one).
    fn conn_by_orig(&self, t: &Tuple) -> Option<usize> {
        (self.scope.0..self.scope.1)
            .rev()
            .find(|&i| self.conns[i].started && self.conns[i].orig == *t)
    }

    fn find(&self, t: &Tuple) -> Option<usize> {
        self.expectations.iter().position(|e| e.tuple == *t)
    }

    /// nf_ct_expect_insert, or EMFILE when the table is full.
    fn insert(&mut self, e: Pending) -> Result<(), i32> {
        if self.expectations.len() >= EXPECTATIONS_MAX {
            self.seen.exp_table_full += 1;
            return Err(EMFILE);
        }
        self.expectations.push(e);
        Ok(())
    }

    // ---- queue socket

    /// Count a verdict for packet `id`; its conntrack.
    fn take_verdict(&mut self, id: usize, verdict: u32) -> Option<usize> {
        let Some(&conn) = self.conn_of_packet.get(id) else {
            self.troubled("verdict for an unknown packet id");
            return None;
        };
        self.verdicts[id] = self.verdicts[id].saturating_add(1);
        self.seen.verdicts += 1;
        if verdict == queue::NF_DROP {
            self.seen.drops += 1;
        } else {
            self.conns[conn].confirmed = true;
        }
        Some(conn)
    }

    /// A datagram of verdicts.
    fn verdicts(&mut self, bytes: &[u8]) {
        for msg in Messages::new(bytes) {
            let Ok(msg) = msg else {
                self.troubled("undecodable verdict datagram");
                return;
            };
            let batch = match (msg.header.subsys(), msg.header.nf_msg()) {
                (subsys::QUEUE, queue::NFQNL_MSG_VERDICT) => false,
                (subsys::QUEUE, queue::NFQNL_MSG_VERDICT_BATCH) => true,
                _ => {
                    self.troubled("not a verdict on the queue socket");
                    continue;
                }
            };
            let Some(t) = attrs::<16>(&msg) else {
                self.troubled("undecodable verdict");
                continue;
            };
            let Some(hdr) = t[usize::from(NFQA_VERDICT_HDR)].and_then(|a| a.payload.get(..8))
            else {
                self.troubled("verdict without NFQA_VERDICT_HDR");
                continue;
            };
            let verdict = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let id = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
            if batch {
                // nfqnl_recv_verdict_batch: every waiting packet of the queue up to the
                // id, in order; the other attributes count for nothing (but a mark).
                if [NFQA_CT, NFQA_EXP, NFQA_PAYLOAD]
                    .iter()
                    .any(|&a| t[usize::from(a)].is_some())
                {
                    self.troubled("a batch verdict carrying what only a single one can");
                }
                self.seen.batch_verdicts += 1;
                let queue = msg.nfnl().map_or(0, |(g, _)| g.res_id);
                let mut taken = 0;
                let mut i = 0;
                while let Some(&w) = self.waiting.get(i) {
                    if self.queue_of_packet[w] == queue && w <= id {
                        self.waiting.remove(i);
                        self.take_verdict(w, verdict);
                        taken += 1;
                    } else {
                        i += 1;
                    }
                }
                if taken == 0 {
                    self.troubled("a batch verdict matching no waiting packet (ENOENT)");
                }
                continue;
            }
            let Some(at) = self.waiting.iter().position(|&w| w == id) else {
                self.troubled("verdict for a packet not waiting");
                continue;
            };
            self.waiting.remove(at);
            let Some(conn) = self.take_verdict(id, verdict) else {
                continue;
            };
            // NFQA_CT: the private data (nfnl_cthelper_from_nlattr).
            if let Some(help) = nested::<16>(t[usize::from(NFQA_CT)])
                .and_then(|ct| nested::<3>(ct[usize::from(CTA_HELP)]))
            {
                match help[usize::from(CTA_HELP_INFO)] {
                    Some(info) if info.payload.len() <= self.conns[conn].private_len => {
                        let c = &mut self.conns[conn];
                        c.private[..info.payload.len()].copy_from_slice(info.payload);
                        self.seen.private_updates += 1;
                    }
                    Some(_) => self.troubled("private data longer than the helper's"),
                    None => self.troubled("NFQA_CT help without info"),
                }
                if help[usize::from(CTA_HELP_NAME)].is_none() {
                    self.troubled("NFQA_CT help without the helper's name");
                }
            }
            // NFQA_EXP: an expectation of the packet's conntrack (nfqnl_attach_expect).
            if let Some(exp) = nested::<16>(t[usize::from(NFQA_EXP)]) {
                self.seen.attached += 1;
                match tuple_in(&exp, CTA_EXPECT_TUPLE) {
                    Some(tuple) if self.find(&tuple).is_none() => {
                        let nat = nested::<3>(exp[usize::from(CTA_EXPECT_NAT)]).and_then(|n| {
                            let dir = n[usize::from(CTA_EXPECT_NAT_DIR)]?.be32().ok()?;
                            Some((dir, tuple_in(&n, CTA_EXPECT_NAT_TUPLE)?))
                        });
                        let master = self.conns[conn].orig;
                        // The kernel ignores the outcome of an attached expectation.
                        let _ = self.insert(Pending { tuple, master, nat });
                    }
                    Some(_) => {}
                    None => self.troubled("NFQA_EXP without a tuple"),
                }
            }
            if let Some(p) = t[usize::from(NFQA_PAYLOAD)] {
                self.seen.payloads += 1;
                if wire::dissect(p.payload).is_err() {
                    self.troubled("a rewritten packet does not dissect");
                }
            }
        }
    }

    // ---- control socket

    fn put_answer(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>) -> cthelperd::netlink::Result<()>,
    ) {
        let tail = self.tail;
        let mut w = Writer::new(&mut self.replies[tail..]);
        match build(&mut w) {
            Ok(()) => self.tail += w.len(),
            Err(_) => self.troubled("answers overflow the reply buffer"),
        }
    }

    /// NLMSG_ERROR answering `req` (errno 0: an ACK), with the capped echo.
    fn error(&mut self, req: &Header, errno: i32) {
        self.put_answer(|w| {
            let mut h = [0u8; NLMSG_HDRLEN];
            Header {
                len: (NLMSG_HDRLEN * 2 + 4) as u32,
                kind: NLMSG_ERROR,
                flags: NLM_F_CAPPED,
                seq: req.seq,
                pid: 0,
            }
            .emit(&mut h);
            w.put_raw(&h)?;
            let mut body = [0u8; 4 + NLMSG_HDRLEN];
            body[..4].copy_from_slice(&(-errno).to_ne_bytes());
            let mut echo = [0u8; NLMSG_HDRLEN];
            req.emit(&mut echo);
            body[4..].copy_from_slice(&echo);
            w.put_raw(&body)
        });
    }

    fn exp_message(&mut self, seq: u32, flags: u16, e: Pending) {
        self.put_answer(|w| {
            let m = w.begin_nfnl(
                nfnl_type(subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_NEW),
                flags,
                seq,
                NfGenMsg {
                    family: af(&e.tuple.src),
                    version: 0,
                    res_id: 0,
                },
            )?;
            put_tuple(w, CTA_EXPECT_MASTER, &e.master)?;
            put_tuple(w, CTA_EXPECT_TUPLE, &e.tuple)?;
            if let Some((dir, saved)) = e.nat {
                let n = w.begin_nested(CTA_EXPECT_NAT)?;
                w.put_be32(CTA_EXPECT_NAT_DIR, dir)?;
                put_tuple(w, CTA_EXPECT_NAT_TUPLE, &saved)?;
                w.end_nested(n)?;
            }
            w.end_msg(m)
        });
    }

    /// One request; its answers are appended to the replies.
    fn request(&mut self, msg: &Message<'_>) {
        self.seen.requests += 1;
        let h = msg.header;
        let result = match (h.subsys(), h.nf_msg()) {
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_NEW) => self.exp_new(msg),
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_GET) if h.flags & NLM_F_DUMP == NLM_F_DUMP => {
                // A dump ends with NLMSG_DONE and gets no ACK.
                self.exp_dump(msg);
                return;
            }
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_GET) => self.exp_get(msg),
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_DELETE) => self.exp_delete(msg),
            (subsys::CTNETLINK, IPCTNL_MSG_CT_GET) => self.ct_get(msg),
            (subsys::CTNETLINK, IPCTNL_MSG_CT_NEW) => self.ct_update(msg),
            _ => {
                self.troubled("a request the packet path should not make");
                Err(EOPNOTSUPP)
            }
        };
        match result {
            Ok(()) if h.flags & NLM_F_ACK != 0 => self.error(&h, 0),
            Ok(()) => {}
            Err(errno) => {
                if errno == ENOENT {
                    self.seen.enoent += 1;
                }
                self.error(&h, errno)
            }
        }
    }

    /// ctnetlink_new_expect: an existing tuple is refreshed, or refused (EEXIST) when
    /// the request is exclusive; a new one needs its master in the table (confirmed).
    fn exp_new(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        let t = attrs::<12>(msg).ok_or(EOPNOTSUPP)?;
        let (Some(tuple), Some(master)) = (
            tuple_in(&t, CTA_EXPECT_TUPLE),
            tuple_in(&t, CTA_EXPECT_MASTER),
        ) else {
            self.troubled("EXP_NEW without tuple or master");
            return Err(EOPNOTSUPP);
        };
        if self.find(&tuple).is_some() {
            if msg.header.flags & NLM_F_EXCL != 0 {
                self.seen.exp_eexist += 1;
                return Err(EEXIST);
            }
            self.seen.exp_refreshed += 1;
            return Ok(());
        }
        match self.conn_by_orig(&master) {
            Some(c) if self.conns[c].confirmed => {}
            _ => {
                // The daemon defers expectations of unconfirmed masters until their
                // verdict is sent: this must not happen.
                self.troubled("EXP_NEW for a master the kernel has not confirmed");
                return Err(ENOENT);
            }
        }
        let nat = nested::<3>(t[usize::from(CTA_EXPECT_NAT)]).and_then(|n| {
            let dir = n[usize::from(CTA_EXPECT_NAT_DIR)]?.be32().ok()?;
            Some((dir, tuple_in(&n, CTA_EXPECT_NAT_TUPLE)?))
        });
        self.insert(Pending { tuple, master, nat })?;
        self.seen.exp_created += 1;
        Ok(())
    }

    fn exp_get(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        self.seen.exp_gets += 1;
        let t = attrs::<12>(msg).ok_or(EOPNOTSUPP)?;
        let tuple = tuple_in(&t, CTA_EXPECT_TUPLE).ok_or(EOPNOTSUPP)?;
        let i = self.find(&tuple).ok_or(ENOENT)?;
        let e = self.expectations[i];
        self.exp_message(msg.header.seq, 0, e);
        Ok(())
    }

    /// ctnetlink_exp_ct_dump_table: the expectations of one master, then NLMSG_DONE.
    fn exp_dump(&mut self, msg: &Message<'_>) {
        self.seen.exp_dumps += 1;
        let master =
            attrs::<12>(msg).and_then(|t: [Option<Attr<'_>>; 12]| tuple_in(&t, CTA_EXPECT_MASTER));
        let Some(master) = master else {
            self.troubled("an expectation dump without a master");
            return;
        };
        for i in 0..self.expectations.len() {
            let e = self.expectations[i];
            if e.master == master {
                self.exp_message(msg.header.seq, NLM_F_MULTI, e);
            }
        }
        let seq = msg.header.seq;
        self.put_answer(|w| {
            let mut h = [0u8; NLMSG_HDRLEN];
            Header {
                len: (NLMSG_HDRLEN + 4) as u32,
                kind: NLMSG_DONE,
                flags: NLM_F_MULTI,
                seq,
                pid: 0,
            }
            .emit(&mut h);
            w.put_raw(&h)?;
            w.put_raw(&0i32.to_ne_bytes())
        });
    }

    fn exp_delete(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        let t = attrs::<12>(msg).ok_or(EOPNOTSUPP)?;
        let tuple = tuple_in(&t, CTA_EXPECT_TUPLE).ok_or(EOPNOTSUPP)?;
        let i = self.find(&tuple).ok_or(ENOENT)?;
        self.expectations.remove(i);
        self.seen.exp_deleted += 1;
        Ok(())
    }

    fn ct_get(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        self.seen.ct_gets += 1;
        let t = attrs::<32>(msg).ok_or(EOPNOTSUPP)?;
        let orig = tuple_in(&t, CTA_TUPLE_ORIG).ok_or(EOPNOTSUPP)?;
        let c = self.conn_by_orig(&orig).ok_or(ENOENT)?;
        let conn = self.conns[c];
        self.put_answer(|w| {
            let m = w.begin_nfnl(
                nfnl_type(subsys::CTNETLINK, IPCTNL_MSG_CT_NEW),
                0,
                msg.header.seq,
                NfGenMsg {
                    family: af(&conn.orig.src),
                    version: 0,
                    res_id: 0,
                },
            )?;
            put_tuple(w, CTA_TUPLE_ORIG, &conn.orig)?;
            put_tuple(w, CTA_TUPLE_REPLY, &conn.reply)?;
            w.put_be32(CTA_STATUS, status::CONFIRMED | status::SEEN_REPLY)?;
            for (kind, adj) in [CTA_SEQ_ADJ_ORIG, CTA_SEQ_ADJ_REPLY]
                .into_iter()
                .zip(conn.seq_adj)
            {
                if adj == SeqAdj::default() {
                    continue;
                }
                let n = w.begin_nested(kind)?;
                w.put_be32(CTA_SEQADJ_CORRECTION_POS, adj.correction_pos)?;
                w.put_be32(CTA_SEQADJ_OFFSET_BEFORE, adj.offset_before as u32)?;
                w.put_be32(CTA_SEQADJ_OFFSET_AFTER, adj.offset_after as u32)?;
                w.end_nested(n)?;
            }
            w.end_msg(m)
        });
        Ok(())
    }

    /// A conntrack update: sequence adjustment and private data.
    fn ct_update(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        self.seen.ct_updates += 1;
        let t = attrs::<32>(msg).ok_or(EOPNOTSUPP)?;
        let orig = tuple_in(&t, CTA_TUPLE_ORIG).ok_or(EOPNOTSUPP)?;
        let c = self.conn_by_orig(&orig).ok_or(ENOENT)?;
        for (i, kind) in [CTA_SEQ_ADJ_ORIG, CTA_SEQ_ADJ_REPLY]
            .into_iter()
            .enumerate()
        {
            let Some(a) = nested::<4>(t[usize::from(kind)]) else {
                continue;
            };
            let get = |k: u16| a[usize::from(k)].and_then(|a| a.be32().ok());
            match (
                get(CTA_SEQADJ_CORRECTION_POS),
                get(CTA_SEQADJ_OFFSET_BEFORE),
                get(CTA_SEQADJ_OFFSET_AFTER),
            ) {
                (Some(pos), Some(before), Some(after)) => {
                    self.conns[c].seq_adj[i] = SeqAdj {
                        correction_pos: pos,
                        offset_before: before as i32,
                        offset_after: after as i32,
                    }
                }
                _ => self.troubled("an incomplete sequence adjustment"),
            }
        }
        if let Some(info) =
            nested::<3>(t[usize::from(CTA_HELP)]).and_then(|h| h[usize::from(CTA_HELP_INFO)])
        {
            let conn = &mut self.conns[c];
            match conn.private.get_mut(..info.payload.len()) {
                Some(p) if info.payload.len() <= conn.private_len => {
                    p.copy_from_slice(info.payload);
                    self.seen.private_updates += 1;
                }
                _ => self.troubled("private data longer than the helper's"),
            }
        }
        Ok(())
    }
}

/// A packet as the kernel queues it.
struct Queued {
    /// The NFQNL_MSG_PACKET message, private data zeroed.
    message: Vec<u8>,
    /// Its packet id.
    id: usize,
    conn: usize,
    /// Where in `message` the private data goes (CTA_HELP_INFO's payload).
    info_at: Option<usize>,
    /// Where CTA_STATUS's value is: CONFIRMED is set when the packet is handed out if
    /// the kernel has confirmed the conntrack by then.
    status_at: usize,
}

/// The queue socket: hands out the queued packets up to `end`, with the private data
/// the conntrack holds by then, and takes the verdicts.
struct QueueLink<'k> {
    kernel: &'k RefCell<Kernel>,
    packets: &'k [Queued],
    next: Cell<usize>,
    end: Cell<usize>,
    seq: u32,
}

impl Link for QueueLink<'_> {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), IoError> {
        self.kernel.borrow_mut().verdicts(bytes);
        Ok(())
    }

    fn recv<'b>(&self, buf: &'b mut [u8], nonblocking: bool) -> Result<Option<&'b [u8]>, IoError> {
        let i = self.next.get();
        if i >= self.end.get() {
            if !nonblocking {
                self.kernel
                    .borrow_mut()
                    .troubled("a blocking read of the queue");
            }
            return if nonblocking {
                Ok(None)
            } else {
                Err(IoError::Timeout)
            };
        }
        self.next.set(i + 1);
        let p = &self.packets[i];
        let n = p.message.len();
        let out = buf.get_mut(..n).ok_or(IoError::Timeout)?;
        out.copy_from_slice(&p.message);
        let mut k = self.kernel.borrow_mut();
        if k.waiting.len() == k.waiting.capacity() {
            k.troubled("more packets waiting than the model reserved room for");
        } else {
            k.waiting.push(p.id);
        }
        let conn = &mut k.conns[p.conn];
        conn.started = true;
        // Confirmed once a verdict accepted one of its packets: a packet queued before
        // that (in the same burst as the first one, or after the first was dropped)
        // sees an unconfirmed conntrack.
        let mut status = u32::from_be_bytes(out[p.status_at..p.status_at + 4].try_into().unwrap());
        if !conn.confirmed {
            status &= !status::CONFIRMED;
        }
        out[p.status_at..p.status_at + 4].copy_from_slice(&status.to_be_bytes());
        if let Some(at) = p.info_at {
            out[at..at + conn.private_len].copy_from_slice(&conn.private[..conn.private_len]);
        }
        Ok(Some(out))
    }
}

/// The control socket: answers each request as ctnetlink would.
struct CtlLink<'k> {
    kernel: &'k RefCell<Kernel>,
    seq: u32,
}

impl Link for CtlLink<'_> {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), IoError> {
        let mut k = self.kernel.borrow_mut();
        for msg in Messages::new(bytes) {
            match msg {
                Ok(m) => k.request(&m),
                Err(_) => k.troubled("undecodable request"),
            }
        }
        Ok(())
    }

    fn recv<'b>(&self, buf: &'b mut [u8], nonblocking: bool) -> Result<Option<&'b [u8]>, IoError> {
        let mut k = self.kernel.borrow_mut();
        if k.head >= k.tail {
            (k.head, k.tail) = (0, 0);
            if nonblocking {
                return Ok(None);
            }
            k.troubled("the daemon waited for an answer that never comes");
            return Err(IoError::Timeout);
        }
        let head = k.head;
        let len = Header::parse(&k.replies[head..])
            .map(|h| h.len as usize)
            .unwrap_or(0)
            .max(NLMSG_HDRLEN);
        let out = buf.get_mut(..len).ok_or(IoError::Timeout)?;
        out.copy_from_slice(&k.replies[head..head + len]);
        k.head += align(len);
        Ok(Some(out))
    }
}

// ------------------------------------------------------------------ captures to packets

/// Every capture of the shared corpus (when this machine has it) and of tests/data, each
/// once: (path relative to its directory, bytes).
fn captures() -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng")
            {
                out.push(path);
            }
        }
    }
    let mut bases: Vec<PathBuf> = common::corpus::shared_corpus().into_iter().collect();
    bases.push(common::corpus::data_dir());
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for base in bases {
        let mut paths = Vec::new();
        walk(&base, &mut paths);
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            if seen.insert(bytes.clone()) {
                let rel = path
                    .strip_prefix(&base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, bytes));
            }
        }
    }
    out
}

/// How the NAT pass translates a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nat {
    None,
    /// Masquerading: the original direction leaves from the router's outside address.
    Source(IpAddr),
    /// A port forward: the client talks to the router's public address.
    Destination(IpAddr),
}

fn router_address(v4: bool, public: bool) -> IpAddr {
    match (v4, public) {
        (true, false) => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
        (true, true) => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)),
        (false, false) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)),
        (false, true) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 2)),
    }
}

/// Replace the source address of an IP packet, fixing the IPv4 header and TCP/UDP
/// checksums incrementally (as NAT does before the helper sees the packet).
fn set_source(l3: &mut [u8], d: &wire::Dissected<'_>, new: IpAddr) {
    let old = d.src;
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    match new {
        IpAddr::V4(a) => {
            l3[12..16].copy_from_slice(&a.octets());
            let c = checksum::update_addr(be16(l3, 10), old, new);
            l3[10..12].copy_from_slice(&c.to_be_bytes());
        }
        IpAddr::V6(a) => l3[8..24].copy_from_slice(&a.octets()),
    }
    let at = match d.transport {
        Transport::Tcp { .. } => d.l4_offset + 16,
        Transport::Udp => d.l4_offset + 6,
    };
    let check = be16(l3, at);
    if check != 0 || matches!(d.transport, Transport::Tcp { .. }) || new.is_ipv6() {
        let c = checksum::update_addr(check, old, new);
        l3[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// (protocol, lower endpoint, higher endpoint): one connection whichever the direction.
type ConnKey = (u8, (IpAddr, u16), (IpAddr, u16));

/// A connection as conntrack sees it while the capture is turned into queued packets.
struct Track {
    conn: usize,
    /// The original tuple with the addresses as captured.
    captured: Tuple,
    isn: Option<u32>,
    seen_reply: bool,
    confirmed: bool,
    /// (helper name, queue, private-data length) the firewall rules assign.
    helper: Option<(&'static str, u16, usize)>,
    nat: Nat,
}

/// The queued packets of one capture, and what they hold.
#[derive(Default)]
struct Built {
    packets: usize,
    helped: usize,
    connections: usize,
    nated: usize,
    skipped: usize,
}

/// Turn one capture into queued packets (appended to `out`, conntracks to `kernel`).
/// `slots`: each helper's (name, queue).
fn build(
    rel: &str,
    bytes: &[u8],
    nat: bool,
    slots: &[(&'static str, u16)],
    kernel: &mut Kernel,
    out: &mut Vec<Queued>,
) -> Built {
    let rules = common::corpus::sip_rules(rel);
    let helped_port =
        |proto: u8, port: u16| rules.iter().any(|r| r.proto == proto && r.port == port);
    let mut built = Built::default();
    let mut ingress = Ingress::new();
    let mut tracks: HashMap<ConnKey, Track> = HashMap::new();
    let Ok(capture) = Capture::new(bytes) else {
        return built;
    };
    for rec in capture {
        let Ok(rec) = rec else {
            break;
        };
        let Seen::Packet(l3) = ingress.frame(&rec) else {
            continue;
        };
        let mut l3 = l3.into_owned();
        // The kernel hands over the IP packet, without link-layer padding.
        let ip_len = match l3.first().map(|b| b >> 4) {
            Some(4) if l3.len() >= 20 => usize::from(u16::from_be_bytes([l3[2], l3[3]])),
            Some(6) if l3.len() >= 40 => 40 + usize::from(u16::from_be_bytes([l3[4], l3[5]])),
            _ => l3.len(),
        };
        l3.truncate(ip_len.max(1));
        let Ok(d) = wire::dissect(&l3) else {
            // Not TCP/UDP, or broken: conntrack never hands it to a helper.
            continue;
        };
        let (syn, ack, seq) = match d.transport {
            Transport::Tcp { seq, flags } => (flags & 0x02 != 0, flags & 0x10 != 0, Some(seq)),
            Transport::Udp => (false, false, None),
        };
        let here = (d.src, d.src_port);
        let there = (d.dst, d.dst_port);
        let key = (d.proto, here.min(there), here.max(there));
        // As replay: a SYN with a new ISN on a known 5-tuple is a new connection.
        let reused = syn && !ack && tracks.get(&key).is_some_and(|t| t.isn != seq);
        if reused || !tracks.contains_key(&key) {
            let client_first = if d.proto != IPPROTO_TCP || syn {
                !(syn && ack)
            } else if helped_port(d.proto, d.dst_port) != helped_port(d.proto, d.src_port) {
                helped_port(d.proto, d.dst_port)
            } else {
                true
            };
            let (c, s) = if client_first {
                (here, there)
            } else {
                (there, here)
            };
            let captured = Tuple {
                src: c.0,
                dst: s.0,
                proto: d.proto,
                src_port: c.1,
                dst_port: s.1,
            };
            let helper = rules
                .iter()
                .find(|r| r.proto == captured.proto && r.port == captured.dst_port)
                .and_then(|r| {
                    let queue = slots.iter().find(|s| s.0 == r.name)?.1;
                    Some((r.name, queue, r.builtin.private_len.min(PRIVATE_DATA_MAX)))
                });
            let v4 = captured.src.is_ipv4();
            let nat = match (nat, built.connections % 2) {
                (false, _) => Nat::None,
                (true, 0) => Nat::Source(router_address(v4, false)),
                (true, _) => Nat::Destination(router_address(v4, true)),
            };
            let (orig, reply) = match nat {
                Nat::None => (captured, captured.reversed()),
                Nat::Source(r) => (
                    captured,
                    Tuple {
                        dst: r,
                        ..captured.reversed()
                    },
                ),
                Nat::Destination(p) => (Tuple { dst: p, ..captured }, captured.reversed()),
            };
            built.connections += 1;
            built.nated += usize::from(nat != Nat::None);
            kernel.conns.push(Conn {
                orig,
                reply,
                started: false,
                confirmed: false,
                private: [0; PRIVATE_DATA_MAX],
                private_len: helper.map_or(0, |h| h.2),
                seq_adj: [SeqAdj::default(); 2],
            });
            tracks.insert(
                key,
                Track {
                    conn: kernel.conns.len() - 1,
                    captured,
                    isn: if syn && !ack { seq } else { None },
                    seen_reply: false,
                    confirmed: false,
                    helper,
                    nat,
                },
            );
        }
        let t = tracks.get_mut(&key).unwrap();
        let original = (d.src, d.src_port) == (t.captured.src, t.captured.src_port);
        if !original {
            // Set by conntrack before the helper sees the first reply.
            t.seen_reply = true;
        }
        // Translated as the packet leaves the router, before nf_confirm queues it.
        let mut packet = l3.clone();
        match t.nat {
            Nat::Source(r) if original => set_source(&mut packet, &d, r),
            Nat::Destination(p) if !original => set_source(&mut packet, &d, p),
            _ => {}
        }
        let conn = kernel.conns[t.conn];
        let status = (u32::from(t.confirmed) * status::CONFIRMED)
            | (u32::from(t.seen_reply) * status::SEEN_REPLY)
            | match t.nat {
                Nat::None => 0,
                Nat::Source(_) => status::SRC_NAT,
                Nat::Destination(_) => status::DST_NAT,
            };
        let ct_info = match (original, t.seen_reply) {
            (false, _) => ctinfo::ESTABLISHED_REPLY,
            (true, true) => ctinfo::ESTABLISHED,
            (true, false) => ctinfo::NEW,
        };
        t.confirmed = true;
        let id = u32::try_from(kernel.conn_of_packet.len()).unwrap();
        let queue = t.helper.map_or(slots[0].1, |h| h.1);
        let mut message = vec![0u8; packet.len() + 1024];
        let mut w = Writer::new(&mut message);
        let mut info_at = None;
        let mut status_at = 0;
        let written = (|| {
            let m = w.begin_nfnl(
                nfnl_type(subsys::QUEUE, queue::NFQNL_MSG_PACKET),
                0,
                0,
                NfGenMsg {
                    family: af(&conn.orig.src),
                    version: 0,
                    res_id: queue,
                },
            )?;
            let mut hdr = [0u8; 7];
            hdr[..4].copy_from_slice(&id.to_be_bytes());
            let hw: u16 = if conn.orig.src.is_ipv4() {
                0x0800
            } else {
                0x86dd
            };
            hdr[4..6].copy_from_slice(&hw.to_be_bytes());
            hdr[6] = HOOK_POSTROUTING;
            w.put(NFQA_PACKET_HDR, &hdr)?;
            let ct = w.begin_nested(NFQA_CT)?;
            put_tuple(&mut w, CTA_TUPLE_ORIG, &conn.orig)?;
            put_tuple(&mut w, CTA_TUPLE_REPLY, &conn.reply)?;
            status_at = w.len() + NLA_HDRLEN;
            w.put_be32(CTA_STATUS, status)?;
            w.put_be32(CTA_ID, u32::try_from(t.conn).unwrap() + 1)?;
            if let Some((name, _, len)) = t.helper {
                let h = w.begin_nested(CTA_HELP)?;
                w.put_str(CTA_HELP_NAME, name)?;
                // nfnl_cthelper_to_nlattr: the private area, only when it has one.
                if len > 0 {
                    info_at = Some(w.len() + NLA_HDRLEN);
                    w.put(CTA_HELP_INFO, &[0; PRIVATE_DATA_MAX][..len])?;
                }
                w.end_nested(h)?;
            }
            w.end_nested(ct)?;
            w.put_be32(NFQA_CT_INFO, ct_info)?;
            w.put(NFQA_PAYLOAD, &packet)?;
            w.end_msg(m)
        })();
        let len = w.len();
        if written.is_err() || len > RX_BUF {
            // Larger than a netlink attribute holds: the kernel cannot queue it whole.
            built.skipped += 1;
            continue;
        }
        message.truncate(len);
        kernel.conn_of_packet.push(t.conn);
        kernel.queue_of_packet.push(queue);
        built.packets += 1;
        built.helped += usize::from(t.helper.is_some());
        out.push(Queued {
            message,
            id: id as usize,
            conn: t.conn,
            info_at,
            status_at,
        });
    }
    built
}

// ------------------------------------------------------------------ the log sink

/// A syslog socket the daemon's logger writes to, drained by a thread of its own.
struct LogSink {
    dir: PathBuf,
    lines: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogSink {
    fn start() -> LogSink {
        let dir = std::env::temp_dir().join(format!("cthelperd-no-alloc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind(dir.join("log")).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let lines = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                match socket.recv(&mut buf) {
                    Ok(_) => {
                        l.fetch_add(1, Relaxed);
                    }
                    Err(_) if s.load(Relaxed) => break,
                    Err(_) => {}
                }
            }
        });
        LogSink {
            dir,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop draining (after what is queued); returns how many lines arrived.
    fn finish(mut self) -> usize {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.lines.load(Relaxed)
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------ the test

/// Queued packets made available per wake-up of the poll loop, in turn: single packets
/// and bursts (greedy reads, batches beyond BATCH), so the private-data cache and the
/// deferred expectations of several packets of a batch run too.
const WAKEUPS: &[usize] = &[1, 1, 2, 1, 5, 1, 1, 64, 1, 3, 100, 1, 8];

#[test]
fn the_packet_path_allocates_nothing_over_every_capture() {
    // ---- start-up: everything here may allocate.
    if let Some(n) = std::env::var_os("CTHELPERD_ALLOC_BACKTRACE") {
        BACKTRACES.store(n.to_string_lossy().parse().unwrap_or(5), Relaxed);
    }
    let sink = LogSink::start();
    // SAFETY: this is the only test of this binary, and nothing else reads or writes the
    // environment meanwhile (libtest's main thread only waits for it).
    unsafe { std::env::set_var("CTHELPERD_SYSLOG_SOCKET", sink.dir.join("log")) };
    cthelperd::logging::init(log::LevelFilter::Off, false);
    assert!(
        cthelperd::logging::enable_syslog(),
        "the test's syslog socket"
    );
    log::set_max_level(log::LevelFilter::Trace);
    log::info!("no_alloc: start-up done");

    let cfg = Config::default();
    let mut path = PacketPath::new(&cfg).unwrap();
    let names: Vec<&str> = path.slots().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["ftp", "tftp", "sip"],
        "every built-in helper enabled"
    );
    let slots: Vec<(&'static str, u16)> = path.slots().iter().map(|s| (s.name, s.queue)).collect();

    let mut kernel = Kernel {
        conns: Vec::new(),
        conn_of_packet: vec![usize::MAX], // packet ids start at 1
        queue_of_packet: vec![u16::MAX],
        waiting: Vec::new(),
        verdicts: Vec::new(),
        scope: (0, 0),
        expectations: Vec::with_capacity(EXPECTATIONS_MAX),
        replies: vec![0; REPLIES],
        head: 0,
        tail: 0,
        seen: Observed::default(),
        trouble: 0,
        first_trouble: None,
    };
    let mut packets = Vec::new();
    // (capture, NAT pass, first packet, end, first conntrack, end)
    let mut streams = Vec::new();
    let (mut totals, mut files) = (Built::default(), 0);
    for (rel, bytes) in captures() {
        files += 1;
        for nat in [false, true] {
            let (p0, c0) = (packets.len(), kernel.conns.len());
            let b = build(&rel, &bytes, nat, &slots, &mut kernel, &mut packets);
            totals.packets += b.packets;
            totals.helped += b.helped;
            totals.connections += b.connections;
            totals.nated += b.nated;
            totals.skipped += b.skipped;
            streams.push((p0, packets.len(), c0, kernel.conns.len()));
        }
    }
    kernel.verdicts = vec![0; kernel.conn_of_packet.len()];
    kernel.waiting = Vec::with_capacity(kernel.conn_of_packet.len());
    let kernel = RefCell::new(kernel);
    let queue = QueueLink {
        kernel: &kernel,
        packets: &packets,
        next: Cell::new(0),
        end: Cell::new(0),
        seq: 0,
    };
    let mut ctl = CtlLink {
        kernel: &kernel,
        seq: 1000,
    };

    // The counter counts this thread's allocations (and only while counting).
    let probe = counted(|| std::hint::black_box(Box::new(7u64)));
    drop(probe);
    assert_eq!(
        (
            ALLOCATIONS.load(Relaxed),
            ALLOCATED_BYTES.load(Relaxed),
            FREES.load(Relaxed)
        ),
        (1, 8, 0),
        "the counting allocator"
    );
    ALLOCATIONS.store(0, Relaxed);
    ALLOCATED_BYTES.store(0, Relaxed);

    // ---- the packet path, counted.
    let mut served = 0;
    let mut failed = None;
    counted(|| {
        let mut wakeup = 0;
        for &(p0, p1, c0, c1) in &streams {
            kernel.borrow_mut().begin((c0, c1));
            queue.next.set(p0);
            while queue.next.get() < p1 {
                let n = WAKEUPS[wakeup % WAKEUPS.len()];
                wakeup += 1;
                queue.end.set(p1.min(queue.next.get() + n));
                while queue.next.get() < queue.end.get() {
                    match path.serve_batch(&queue, &mut ctl, n > 1) {
                        Ok(k) => served += k,
                        Err(e) => {
                            failed.get_or_insert(e);
                            queue.next.set(queue.end.get());
                        }
                    }
                }
            }
        }
    });
    let (allocations, bytes, frees) = (
        ALLOCATIONS.load(Relaxed),
        ALLOCATED_BYTES.load(Relaxed),
        FREES.load(Relaxed),
    );

    // ---- what it covered, then the verdict.
    log::set_max_level(log::LevelFilter::Off);
    let log_lines = sink.finish();
    let kernel = kernel.into_inner();
    let s = kernel.seen;
    let stats = |name: &str| path.slots().iter().find(|x| x.name == name).unwrap().stats;
    let sum = |f: fn(&cthelperd::daemon::Stats) -> u64| {
        path.slots().iter().map(|x| f(&x.stats)).sum::<u64>()
    };
    let (verdict_errors, unhandled) = path.counters();
    println!(
        "{files} captures, twice (as captured, NATed): {} packets served ({} of helped \
         connections, {} skipped as too large to queue), {} connections ({} NATed)",
        served, totals.helped, totals.skipped, totals.connections, totals.nated
    );
    for slot in path.slots() {
        println!("  {}: {}", slot.name, slot.status_line().counters());
    }
    println!(
        "  packets passed without a helper {unhandled}, verdict errors {verdict_errors}; \
         kernel saw {s:?}"
    );
    println!("  {log_lines} log lines at trace level");
    println!("  allocations on the packet path: {allocations} ({bytes} bytes), frees {frees}");

    assert_eq!(failed, None, "serving failed");
    assert_eq!(
        kernel.trouble, 0,
        "the scripted kernel: {:?}",
        kernel.first_trouble
    );
    assert_eq!(served, totals.packets, "every queued packet was handled");
    let unanswered = kernel.verdicts.iter().skip(1).filter(|&&n| n != 1).count();
    assert_eq!(unanswered, 0, "packets without exactly one verdict");
    assert!(
        s.batch_verdicts > 0,
        "runs of plain accepts went out as batch verdicts"
    );
    // Not vacuous: every helper ran, expectations were made and deleted, rewrites and
    // sequence adjustments happened, and the log was on.
    for name in ["ftp", "tftp", "sip"] {
        let st = stats(name);
        assert!(st.packets > 0 && st.expectations > 0, "{name}: {st:?}");
    }
    assert!(stats("ftp").rewritten > 0 && stats("sip").rewritten > 0);
    assert!(sum(|x| x.deleted) > 0, "deletions");
    assert_eq!(
        s.payloads,
        sum(|x| x.rewritten),
        "rewritten packets in verdicts"
    );
    assert!(s.exp_created > 0 && s.attached > 0, "{s:?}");
    assert!(s.ct_updates > 0, "IPv6 sequence adjustments: {s:?}");
    assert!(
        s.exp_table_full > 0 && s.drops > 0,
        "refused expectations, dropped announcements: {s:?}"
    );
    assert!(log_lines > 0);
    assert!(
        allocations == 0 && bytes == 0 && frees == 0,
        "{allocations} allocations ({bytes} bytes) and {frees} frees on the packet path; \
         CTHELPERD_ALLOC_BACKTRACE=5 prints where the first 5 happen"
    );
}
