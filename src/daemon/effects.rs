//! What a helper's plan means for the kernel: expectations deleted and created over
//! ctnetlink (NAT port search for single ports and RTP/RTCP pairs, refresh of our own,
//! withdrawal when the packet is dropped) or attached to the verdict and deferred until
//! it is sent (unconfirmed master), NAT rewrites of the packet, and the IPv6 sequence
//! adjustment. The kernel is reached only through [`Ctl`], so all of it runs against a
//! scripted kernel in tests.

use log::{debug, info, warn};
use nix::errno::Errno;

use super::kernel::{Ctl, MAX_BATCH};
use super::serve::Examined;
use super::slots::Slot;
use crate::helpers::plan::PAIR_LEN;
use crate::helpers::{Expect, MAX_EXPECTATIONS_PER_PACKET, Pairing};
use crate::model::{Expectation, Tuple, status};
use crate::nat::ports::{Search, Shape};
use crate::netlink::ctnetlink;
use crate::netlink::queue;
use crate::netlink::socket::IoError;

mod nat;
#[cfg(test)]
use nat::{Rewritten, rewrite};
use nat::{Translated, translate};

/// A master connection in log lines: "src -> dst:port" of its original tuple.
pub(super) struct Endpoints<'a>(&'a crate::model::Tuple);

impl core::fmt::Display for Endpoints<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} -> {}:{}", self.0.src, self.0.dst, self.0.dst_port)
    }
}

/// Expectations of one plan, in plan order, with their pairing.
pub(super) type Expects = heapless::Vec<Expect, MAX_EXPECTATIONS_PER_PACKET>;

/// What to send back for one examined packet.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) verdict: u32,
    /// The verdict carries the private data.
    pub(super) help: bool,
    /// The private data went out over ctnetlink instead (with an IPv6 sequence
    /// adjustment).
    pub(super) private_written: bool,
    /// The expectation to attach to the verdict (unconfirmed master).
    pub(super) attached: Option<Expectation>,
    /// The other expectations of an unconfirmed master: created over ctnetlink once the
    /// verdict that confirms it has been sent (serve.rs).
    pub(super) deferred: Expects,
    /// The rewritten packet's length in the mangle buffer.
    pub(super) rewritten_len: Option<usize>,
    /// The verdict must make the kernel record a sequence adjustment.
    pub(super) seq_adjust: bool,
    /// The conntrack's new timeout for the verdict (the plan's `master_timeout`, on a
    /// confirmed conntrack; see `queue::Verdict::timeout`).
    pub(super) master_timeout: Option<u32>,
}

/// Carry out what the helper planned for one packet: delete and create its
/// expectations, rewrite its announcements for NAT, and decide the verdict.
pub(super) fn answer(
    slot: &mut Slot,
    ex: &Examined,
    payload: &[u8],
    mangle: &mut [u8],
    ctl: &mut Ctl<'_>,
) -> Answer {
    let applied = apply(slot, ex, ctl);
    let mut a = Answer {
        verdict: queue::PASS,
        help: ex.plan.private_changed,
        private_written: false,
        attached: applied.attached,
        deferred: applied.deferred.clone(),
        rewritten_len: None,
        seq_adjust: false,
        master_timeout: ex
            .plan
            .master_timeout
            .filter(|_| ex.conntrack.status & status::CONFIRMED != 0),
    };
    if ex.plan.rewrites.is_empty() {
        return a;
    }
    match translate(slot, ex, &applied, payload, mangle, ctl) {
        Translated::Unchanged => {}
        Translated::Packet {
            len,
            private_written,
        } => {
            a.rewritten_len = Some(len);
            if private_written {
                // IPv6: the adjustment and the private data are set; the verdict must
                // carry no conntrack part or the kernel would record a wrong one.
                a.help = false;
                a.master_timeout = None;
                a.private_written = true;
            } else {
                a.seq_adjust = len != payload.len();
            }
        }
        Translated::Drop if ex.plan.pass_unrewritable => {
            // SIP: the message passes as it is, and what it announced through the NAT
            // is not opened (the peer was not told the translated endpoint).
            a.attached = a.attached.filter(|e| e.nat.is_none());
            a.deferred.retain(|e| e.exp.nat.is_none());
            withdraw(slot, ex, &applied, |e| e.nat.is_some(), ctl);
        }
        Translated::Drop => {
            // As nf_nat_ftp: the announcement cannot go out right, so it does not go
            // out at all, and nothing stays open for it; the sender retransmits.
            a.verdict = queue::NF_DROP;
            a.attached = None;
            a.deferred.clear();
            withdraw(slot, ex, &applied, |_| true, ctl);
        }
    }
    a
}

/// How many expectations of `exps`, from `i` on, go together: 2 for an RTP/RTCP pair, 1
/// otherwise (a half pair is taken as a single expectation).
fn group_len(exps: &[Expect], i: usize) -> usize {
    match (exps.get(i), exps.get(i + 1)) {
        (Some(a), Some(b)) if a.pairing == Pairing::Rtp && b.pairing == Pairing::Rtcp => PAIR_LEN,
        _ => 1,
    }
}

/// Count the outcome, delete what the plan asks to delete, and create its expectations.
/// Expectations of a confirmed master go through ctnetlink with an ACK so failures are
/// known. An unconfirmed master (a first packet, such as a TFTP request or a UDP INVITE)
/// is not yet findable there: its first expectation rides on the verdict, the others
/// are returned to be created once the verdict has been sent. An expectation of a NATed
/// master whose port is taken on the outside address (EEXIST, EBUSY) is retried on the
/// next ports, as the kernel's NAT helpers do; the port it got is reported so the
/// announcement can name it.
pub(super) fn apply(slot: &mut Slot, ex: &Examined, ctl: &mut Ctl<'_>) -> Applied {
    slot.stats.packets += 1;
    if ex.plan.parse_error {
        slot.stats.parse_errors += 1;
        // Debug only, and rate-limited: peers can send malformed payloads at will,
        // and the count is in the stats.
        if log::log_enabled!(log::Level::Debug)
            && slot.log_limit.allow(std::time::Instant::now(), slot.name)
        {
            debug!(
                "{}: unparsable payload on {}",
                slot.name,
                Endpoints(&ex.conntrack.orig)
            );
        }
    }
    if ex.stream_overflow && slot.log_limit.allow(std::time::Instant::now(), slot.name) {
        warn!(
            "{}: a message on {} does not fit the TCP reassembly buffers ({} of {} bytes): \
             passed unparsed, and that direction of the connection is no longer helped \
             (stream_overflows in `cthelperd status`)",
            slot.name,
            Endpoints(&ex.conntrack.orig),
            crate::helpers::sip::stream::STREAM_SLOTS,
            crate::helpers::sip::stream::STREAM_BUF
        );
    }
    if ex.plan.unrewritten {
        slot.stats.unrewritten += 1;
        if slot.log_limit.allow(std::time::Instant::now(), slot.name) {
            info!(
                "{}: a message on {} needed a NAT rewrite it cannot get (it began in a TCP \
                 segment already sent, or needs more rewrites than one packet holds): passed \
                 unchanged, nothing it announces through the NAT opened (unrewritten in \
                 `cthelperd status`)",
                slot.name,
                Endpoints(&ex.conntrack.orig)
            );
        }
    }
    for r in &ex.plan.refusals {
        slot.stats.refused += 1;
        if !slot.log_limit.allow(std::time::Instant::now(), slot.name) {
            continue;
        }
        info!(
            "{}: refused {} announcing {} port {} from {} ({:?})",
            slot.name, r.what, r.announced, r.port, r.sender, r.reason
        );
    }
    delete_planned(slot, ex, ctl);
    let confirmed = ex.conntrack.status & status::CONFIRMED != 0;
    let mut applied = Applied {
        attached: None,
        deferred: Expects::new(),
        ports: [None; MAX_EXPECTATIONS_PER_PACKET],
    };
    let exps = &ex.plan.expectations;
    if !confirmed {
        let free = free_ports(exps, &ex.conntrack.orig, ex.conntrack.zone, ctl);
        for (i, e) in exps.iter().enumerate() {
            // Attached or created after the verdict, each on its announced port or,
            // behind NAT, the first free one.
            let port = free.get(i).copied().flatten().unwrap_or(e.exp.dst_port);
            let e = &Expect {
                exp: Expectation {
                    dst_port: port,
                    ..e.exp
                },
                ..*e
            };
            if let Some(p) = applied.ports.get_mut(i) {
                *p = Some(port);
            }
            if i == 0 {
                applied.attached = Some(e.exp);
                slot.stats.expectations += 1;
                // The kernel does not report the outcome of an attached
                // expectation; this says only that it was asked for.
                debug!(
                    "{}: expecting {} {} -> {}:{}{} (attached to the verdict)",
                    slot.name,
                    e.exp.proto,
                    e.exp.src,
                    e.exp.dst,
                    e.exp.dst_port,
                    NatNote(&e.exp)
                );
                continue;
            }
            // The RTCP half of a pair whose RTP half rides on the verdict is on its own.
            let pairing = if i == 1 && e.pairing == Pairing::Rtcp {
                Pairing::Single
            } else {
                e.pairing
            };
            // Cannot fail: as many as the plan holds.
            let _ = applied.deferred.push(Expect {
                exp: e.exp,
                pairing,
                timeout: e.timeout,
            });
        }
        return applied;
    }
    let master = &ex.conntrack.orig;
    if exps.iter().all(|e| e.exp.nat.is_none()) {
        // No port search: every expectation goes out in one batch.
        create_batch(slot, master, ex.conntrack.zone, exps, &mut applied, ctl);
        return applied;
    }
    let mut i = 0;
    while let Some(first) = exps.get(i) {
        let n = group_len(exps, i);
        let group = [
            Some(first.exp),
            exps.get(i + 1).map(|e| e.exp).filter(|_| n == PAIR_LEN),
        ];
        let timeout = first.timeout.filter(|_| n == 1);
        if let Some(port) = create(slot, master, ex.conntrack.zone, group, timeout, true, ctl) {
            for (k, p) in applied.ports.iter_mut().skip(i).take(n).enumerate() {
                *p = port.checked_add(k as u16);
            }
        }
        i += n;
    }
    applied
}

/// The ports the NAT expectations of an unconfirmed master are to take. It is not in
/// the kernel's table yet, so its expectations cannot be created (and a taken port
/// found) before its verdict, which must already name the port: look each candidate
/// up instead, and take the first no other master expects (for an RTP/RTCP pair: both
/// free). Without this a second phone behind the same NAT announcing the same port
/// would be told a port whose media go to the first one. None: the announced port.
///
/// One expected by a master with this packet's original tuple is this connection's
/// own: a UDP retransmission queued before the first packet's verdict confirmed the
/// connection comes with a conntrack of its own (the kernel merges the two when it
/// confirms), and must name the same ports. Moving it would give the connection a
/// second set of expectations, and the kernel would evict the first set to keep the
/// class limits.
fn free_ports(
    exps: &[Expect],
    master: &Tuple,
    zone: Option<u16>,
    ctl: &mut Ctl<'_>,
) -> [Option<u16>; MAX_EXPECTATIONS_PER_PACKET] {
    let mut free = [None; MAX_EXPECTATIONS_PER_PACKET];
    let mut i = 0;
    while let Some(first) = exps.get(i) {
        let n = group_len(exps, i);
        i += n;
        if first.exp.nat.is_none() {
            continue;
        }
        let shape = if n == PAIR_LEN {
            Shape::Pair
        } else {
            Shape::Single
        };
        let taken = |ctl: &mut Ctl<'_>, port: u16| {
            let t = Tuple {
                dst_port: port,
                ..first.exp.tuple()
            };
            expectation_master(ctl, &t, zone).is_some_and(|m| m != *master)
        };
        let port = Search::new(shape, first.exp.dst_port).find(|&port| {
            !taken(ctl, port)
                && (n == 1 || port.checked_add(1).is_some_and(|rtcp| !taken(ctl, rtcp)))
        });
        for (k, slot) in free.iter_mut().skip(i - n).take(n).enumerate() {
            *slot = port.and_then(|p| p.checked_add(k as u16));
        }
    }
    free
}

/// Create the expectations `exps` of a master without NAT (each on its announced port)
/// with one batch of exclusive EXP_NEWs instead of a round trip each. A group (one, or an
/// RTP/RTCP pair) all of whose requests succeeded is done; any other is undone (the half
/// of a pair that was made is deleted) and goes the one-by-one way of [`create`], which
/// refreshes an expectation this master already holds (EEXIST on a retransmission) and
/// counts and logs the rest.
fn create_batch(
    slot: &mut Slot,
    master: &Tuple,
    zone: Option<u16>,
    exps: &[Expect],
    applied: &mut Applied,
    ctl: &mut Ctl<'_>,
) {
    let outcomes = ctl.requests(
        exps.len(),
        |w, i, seq| {
            let e = exps.get(i).ok_or(crate::netlink::Error::Truncated)?;
            let timeout = slot.expect_timeout(e.exp.class);
            ctnetlink::write_exp_new(w, seq, &e.exp, master, zone, true, timeout)
        },
        |_, _| {},
    );
    let succeeded = |k: usize| matches!(outcomes.get(k), Some(Ok(())));
    let mut i = 0;
    while let Some(first) = exps.get(i) {
        let n = group_len(exps, i);
        let timeout = first.timeout.filter(|_| n == 1);
        if (i..i + n).all(succeeded) {
            let port = first.exp.dst_port;
            made(
                slot,
                master,
                zone,
                &first.exp,
                port,
                n == PAIR_LEN,
                timeout,
                ctl,
            );
            for k in i..i + n {
                if let (Some(p), Some(e)) = (applied.ports.get_mut(k), exps.get(k)) {
                    *p = Some(e.exp.dst_port);
                }
            }
        } else {
            for k in (i..i + n).filter(|&k| succeeded(k)) {
                if let Some(e) = exps.get(k) {
                    let _ = delete_expectation(
                        slot,
                        &e.exp.tuple(),
                        zone,
                        (" (half of a pair)", true),
                        ctl,
                    );
                }
            }
            let group = [
                Some(first.exp),
                exps.get(i + 1).map(|e| e.exp).filter(|_| n == PAIR_LEN),
            ];
            if let Some(port) = create(slot, master, zone, group, timeout, true, ctl) {
                for (k, p) in applied.ports.iter_mut().skip(i).take(n).enumerate() {
                    *p = port.checked_add(k as u16);
                }
            }
        }
        i += n;
    }
}

/// Create one expectation, or an RTP/RTCP pair (`group[1]`, both or neither), of master
/// `master` over ctnetlink, counting and logging the outcome. Behind NAT the port is
/// searched when `search` (else only the announced one is tried: its packet already went
/// out naming it). Returns the (RTP) port it got.
pub(super) fn create(
    slot: &mut Slot,
    master: &Tuple,
    zone: Option<u16>,
    group: [Option<Expectation>; PAIR_LEN],
    timeout: Option<u32>,
    search: bool,
    ctl: &mut Ctl<'_>,
) -> Option<u16> {
    let [Some(exp), rtcp] = group else {
        return None;
    };
    let shape = match (search && exp.nat.is_some(), rtcp) {
        (false, _) => Shape::Fixed,
        (true, None) => Shape::Single,
        (true, Some(_)) => Shape::Pair,
    };
    let n = 1 + u64::from(rtcp.is_some());
    let pair = if rtcp.is_some() {
        " (and RTCP on the next)"
    } else {
        ""
    };
    match create_expectation(slot, master, zone, &exp, rtcp.as_ref(), shape, ctl) {
        (Ok(()), port) => {
            made(slot, master, zone, &exp, port, rtcp.is_some(), timeout, ctl);
            Some(port)
        }
        (Err(e), last) => {
            slot.stats.expectation_errors += n;
            if slot.log_limit.allow(std::time::Instant::now(), slot.name) {
                warn!(
                    "{}: cannot create expectation {} -> {}:{}{pair} (ports tried {}..={last}): {e}{}",
                    slot.name,
                    exp.src,
                    exp.dst,
                    exp.dst_port,
                    exp.dst_port,
                    expectation_error_hint(&e)
                );
            }
            None
        }
    }
}

/// Count and log an expectation (and its RTCP partner when `pair`) created on `port`,
/// and give it its own timeout if it has one.
#[allow(clippy::too_many_arguments)]
fn made(
    slot: &mut Slot,
    master: &Tuple,
    zone: Option<u16>,
    exp: &Expectation,
    port: u16,
    pair: bool,
    timeout: Option<u32>,
    ctl: &mut Ctl<'_>,
) {
    slot.stats.expectations += 1 + u64::from(pair);
    if let Some(secs) = timeout {
        set_timeout(slot, master, zone, exp, port, secs, ctl);
    }
    debug!(
        "{}: expecting {} {} -> {}:{}{}{}",
        slot.name,
        exp.proto,
        exp.src,
        exp.dst,
        port,
        if pair { " (and RTCP on the next)" } else { "" },
        NatNote(exp)
    );
}

/// What to do about a refused expectation, where the errno alone misleads: the kernel
/// answers EMFILE ("Too many open files") when its expectation table is full
/// (nf_conntrack_expect_max, 4 per 256 conntrack hash buckets by default: about 32 on a
/// small router) or when the master already has as many expectations of the class as its
/// policy allows and none could be evicted.
fn expectation_error_hint(e: &IoError) -> &'static str {
    match e.errno() {
        Some(Errno::EEXIST | Errno::EBUSY) => {
            " (another connection already expects this address and port)"
        }
        Some(Errno::EMFILE) => {
            " (the kernel's expectation table is full: raise sysctl \
             net.netfilter.nf_conntrack_expect_max; or this connection reached its class's \
             expect_max)"
        }
        Some(Errno::ENOENT) => {
            " (its connection is gone: it ended or was removed before the expectation was made)"
        }
        Some(Errno::ESHUTDOWN) => " (its connection is being removed)",
        Some(Errno::EPERM) => " (the daemon needs CAP_NET_ADMIN)",
        Some(Errno::ENOMEM) => " (the kernel could not allocate it: the router is low on memory)",
        Some(Errno::EOPNOTSUPP) => {
            " (the connection lost its helper, or NAT support is missing for a NATed one: \
             kmod-nf-nat)"
        }
        Some(Errno::EINVAL) => {
            " (the kernel's registration of the helper lacks this expectation class: restart \
             cthelperd)"
        }
        Some(Errno::EAGAIN) => " (the kernel asked to try again; the next announcement will)",
        _ => "",
    }
}

/// Restart the timer of an expectation just created with `secs` seconds: the kernel
/// takes a new expectation's timeout from its class policy and changes it only on a
/// refresh (a non-exclusive EXP_NEW of an existing expectation with
/// CTA_EXPECT_TIMEOUT). Best effort: on failure it keeps its class's timeout.
fn set_timeout(
    slot: &mut Slot,
    master: &Tuple,
    zone: Option<u16>,
    exp: &Expectation,
    port: u16,
    secs: u32,
    ctl: &mut Ctl<'_>,
) {
    let exp = Expectation {
        dst_port: port,
        ..*exp
    };
    if let Err(e) = ctl.request(
        |w, seq| ctnetlink::write_exp_new(w, seq, &exp, master, zone, false, secs),
        |_| {},
    ) {
        slot.stats.expectation_errors += 1;
        if slot.log_limit.allow(std::time::Instant::now(), slot.name) {
            warn!(
                "{}: cannot set the timeout of expectation {} -> {}:{} to {secs} s: {e}",
                slot.name, exp.src, exp.dst, port
            );
        }
    }
}

/// What one attempt at a port gave.
enum Try {
    Created,
    /// Another master holds an expectation there (NAT): try another port.
    Taken(IoError),
    Failed(IoError),
}

/// Ask for `exp` on `port`, always exclusively: without NLM_F_EXCL ctnetlink "refreshes"
/// an expectation of the same tuple whatever its master, reporting success, so an
/// announcement could take over (and a later BYE delete) another connection's
/// expectation — a phone's registration, say. One this master already holds is
/// refreshed (its timer restarted) and keeps its port, as the kernel does; one another
/// master holds is a NAT port taken (try another) or, without NAT, an error (the
/// kernel's helpers refuse it too: EBUSY).
fn try_port(
    slot: &Slot,
    master: &Tuple,
    zone: Option<u16>,
    exp: &Expectation,
    port: u16,
    ctl: &mut Ctl<'_>,
) -> Try {
    let exp = Expectation {
        dst_port: port,
        ..*exp
    };
    let mut exclusive = true;
    loop {
        let result = ctl.request(
            |w, seq| {
                ctnetlink::write_exp_new(
                    w,
                    seq,
                    &exp,
                    master,
                    zone,
                    exclusive,
                    slot.expect_timeout(exp.class),
                )
            },
            |_| {},
        );
        match result {
            Ok(()) => return Try::Created,
            Err(e)
                if exclusive
                    && e.errno() == Some(Errno::EEXIST)
                    && expectation_master(ctl, &exp.tuple(), zone) == Some(*master) =>
            {
                // Ours (a repeated or retransmitted announcement): refresh it.
                exclusive = false;
            }
            Err(e)
                if matches!(e.errno(), Some(Errno::EBUSY | Errno::EEXIST)) && exp.nat.is_some() =>
            {
                return Try::Taken(e);
            }
            Err(e) => return Try::Failed(e),
        }
    }
}

/// Create `exp` (with `rtcp` on the port after it, both or neither) over ctnetlink,
/// trying the ports of a `shape` search (nat/ports.rs); returns the outcome and the
/// (RTP) port it got, or the last one tried. An RTCP port that is taken moves the pair:
/// the RTP expectation just made is deleted again and the next candidate tried.
pub(super) fn create_expectation(
    slot: &Slot,
    master: &Tuple,
    zone: Option<u16>,
    exp: &Expectation,
    rtcp: Option<&Expectation>,
    shape: Shape,
    ctl: &mut Ctl<'_>,
) -> (Result<(), IoError>, u16) {
    let mut last = (
        Err(IoError::Protocol(crate::netlink::Error::Malformed(
            "no port to try",
        ))),
        exp.dst_port,
    );
    for port in Search::new(shape, exp.dst_port) {
        match try_port(slot, master, zone, exp, port, ctl) {
            Try::Created => {}
            Try::Taken(e) => {
                last = (Err(e), port);
                continue;
            }
            Try::Failed(e) => return (Err(e), port),
        }
        let (Some(rtcp), Some(rtcp_port)) = (rtcp, port.checked_add(1)) else {
            return (Ok(()), port);
        };
        let outcome = try_port(slot, master, zone, rtcp, rtcp_port, ctl);
        if !matches!(outcome, Try::Created) {
            let rtp = Tuple {
                dst_port: port,
                ..exp.tuple()
            };
            // Best effort: on failure it expires with its timeout.
            let _ = ctl.request(
                |w, seq| ctnetlink::write_exp_delete(w, seq, &rtp, zone),
                |_| {},
            );
        }
        match outcome {
            Try::Created => return (Ok(()), port),
            Try::Taken(e) => last = (Err(e), port),
            Try::Failed(e) => return (Err(e), port),
        }
    }
    last
}

/// Delete the pending expectation with tuple `t`. A refusal is counted and logged
/// (rate-limited), `context` saying what the deletion was for, except ENOENT when
/// `gone_ok` (a planned deletion of one that expired, was used or never made).
fn delete_expectation(
    slot: &mut Slot,
    t: &Tuple,
    zone: Option<u16>,
    (context, gone_ok): (&str, bool),
    ctl: &mut Ctl<'_>,
) -> Result<(), IoError> {
    let result = ctl.request(
        |w, seq| ctnetlink::write_exp_delete(w, seq, t, zone),
        |_| {},
    );
    if let Err(e) = &result
        && !(gone_ok && e.errno() == Some(Errno::ENOENT))
    {
        deletion_failed(slot, t, context, e);
    }
    result
}

/// Count and log (rate-limited) an expectation that could not be deleted.
fn deletion_failed(slot: &mut Slot, t: &Tuple, context: &str, e: &IoError) {
    slot.stats.expectation_errors += 1;
    if slot.log_limit.allow(std::time::Instant::now(), slot.name) {
        warn!(
            "{}: cannot delete expectation {} -> {}:{}{context}: {e}",
            slot.name, t.src, t.dst, t.dst_port
        );
    }
}

/// Delete the pending expectations the plan names that this connection holds. The kernel
/// deletes by tuple whatever the master, so this connection's expectations are listed
/// first (one dump by master, however many deletions): one that is gone (expired, used,
/// never made) or held by another connection (its creation here was refused) is left
/// alone. Behind NAT a planned deletion names the expectation on its announced port,
/// but the port search may have moved it (another inside host expected that port): the
/// master's expectations that translate back to that port are deleted too. The
/// deletions are then one batch.
fn delete_planned(slot: &mut Slot, ex: &Examined, ctl: &mut Ctl<'_>) {
    let dels = &ex.plan.deletions;
    if dels.is_empty() {
        return;
    }
    let zone = ex.conntrack.zone;
    let nated = ex.conntrack.is_nated();
    let mut ours: heapless::Vec<Tuple, MAX_BATCH> = heapless::Vec::new();
    let listed = ctl.request(
        |w, seq| ctnetlink::write_exp_dump_of(w, seq, &ex.conntrack.orig, zone),
        |msg| {
            let Ok((_, attrs)) = msg.nfnl() else {
                return;
            };
            let Ok((t, saved_port)) = ctnetlink::parse_exp_tuple_nat(attrs) else {
                return;
            };
            // Live expectations never share a destination (the kernel refuses a
            // clash), so destination and protocol name one.
            let planned = |d: &Tuple| (d.proto, d.dst, d.dst_port) == (t.proto, t.dst, t.dst_port);
            let moved_from = |d: &Tuple| {
                nated
                    && saved_port.is_some_and(|saved| {
                        d.dst_port == saved
                            && t.dst_port != saved
                            && (d.src, d.dst, d.proto) == (t.src, t.dst, t.proto)
                    })
            };
            if dels.iter().any(|d| planned(d) || moved_from(d)) && !ours.contains(&t) {
                let _ = ours.push(t);
            }
        },
    );
    if let Err(e) = listed {
        // ENOENT: the connection is gone, and its expectations with it.
        if e.errno() != Some(Errno::ENOENT) {
            debug!(
                "{}: cannot list this connection's expectations: {e}",
                slot.name
            );
        }
        return;
    }
    let outcomes = ctl.requests(
        ours.len(),
        |w, i, seq| {
            let t = ours.get(i).ok_or(crate::netlink::Error::Truncated)?;
            ctnetlink::write_exp_delete(w, seq, t, zone)
        },
        |_, _| {},
    );
    for (t, r) in ours.iter().zip(outcomes) {
        match r {
            Ok(()) => {
                slot.stats.deleted += 1;
                debug!(
                    "{}: deleted expectation {} -> {}:{}",
                    slot.name, t.src, t.dst, t.dst_port
                );
            }
            // Gone between the listing and the deletion (used or expired).
            Err(e) if e.errno() == Some(Errno::ENOENT) => {}
            Err(e) => deletion_failed(slot, t, "", &e),
        }
    }
}

/// Delete the expectations `apply` created over ctnetlink for a packet that is dropped
/// after all (as nf_nat_ftp's nf_ct_unexpect_related): nothing may stay open for an
/// announcement the peer never receives.
pub(super) fn withdraw(
    slot: &mut Slot,
    ex: &Examined,
    applied: &Applied,
    which: impl Fn(&Expectation) -> bool,
    ctl: &mut Ctl<'_>,
) {
    if applied.attached.is_some() {
        // Unconfirmed master: attached to the verdict, which is now a drop without it,
        // or deferred, and now never created.
        return;
    }
    for (i, e) in ex.plan.expectations.iter().enumerate() {
        let Some(port) = applied.ports.get(i).copied().flatten() else {
            continue;
        };
        if !which(&e.exp) {
            continue;
        }
        let t = Tuple {
            dst_port: port,
            ..e.exp.tuple()
        };
        if delete_expectation(
            slot,
            &t,
            ex.conntrack.zone,
            (" of a packet whose rewrite failed", false),
            ctl,
        )
        .is_ok()
        {
            slot.stats.withdrawn += 1;
        }
    }
}

/// The master (original tuple) of the pending expectation with tuple `t`, if the
/// kernel has one.
pub(super) fn expectation_master(ctl: &mut Ctl<'_>, t: &Tuple, zone: Option<u16>) -> Option<Tuple> {
    let mut master = None;
    ctl.request(
        |w, seq| ctnetlink::write_exp_get(w, seq, t, zone),
        |msg| {
            if let Ok((_, attrs)) = msg.nfnl() {
                master = ctnetlink::parse_exp_master(attrs).ok();
            }
        },
    )
    .ok()?;
    master
}

/// What `apply` did with a packet's expectations.
pub(super) struct Applied {
    /// The expectation to attach to the verdict (unconfirmed master).
    attached: Option<Expectation>,
    /// The others of an unconfirmed master, to create once the verdict is sent.
    deferred: Expects,
    /// The port each expectation got, by index; None where it could not be created.
    ports: [Option<u16>; MAX_EXPECTATIONS_PER_PACKET],
}

/// " (NAT: real endpoint A port P)" for expectations that follow a NATed master.
pub(super) struct NatNote<'a>(&'a crate::model::Expectation);

impl core::fmt::Display for NatNote<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0.nat {
            Some(n) => write!(f, " (NAT to {} port {})", n.saved_addr, n.saved_port),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn a_full_expectation_table_is_named() {
        let full = IoError::Kernel {
            errno: Errno::EMFILE,
            text: None,
        };
        assert!(expectation_error_hint(&full).contains("nf_conntrack_expect_max"));
        assert_eq!(expectation_error_hint(&IoError::Timeout), "");
        // Every errno the kernel answers to EXP_NEW says what it means.
        for errno in [
            Errno::EEXIST,
            Errno::EBUSY,
            Errno::ENOENT,
            Errno::ESHUTDOWN,
            Errno::EPERM,
            Errno::ENOMEM,
            Errno::EOPNOTSUPP,
            Errno::EINVAL,
            Errno::EAGAIN,
        ] {
            let e = IoError::Kernel { errno, text: None };
            assert!(expectation_error_hint(&e).starts_with(" ("), "{errno:?}");
        }
    }
}

#[cfg(test)]
mod tests;
