//! What a helper's plan means for the kernel: expectations deleted and created over
//! ctnetlink (NAT port search for single ports and RTP/RTCP pairs, refresh of our own,
//! withdrawal when the packet is dropped) or attached to the verdict and deferred until
//! it is sent (unconfirmed master), NAT rewrites of the packet, and the IPv6 sequence
//! adjustment. The kernel is reached only through [`Ctl`], so all of it runs against a
//! scripted kernel in tests.

use log::{debug, info, warn};
use nix::errno::Errno;

use super::kernel::Ctl;
use super::serve::Examined;
use super::slots::Slot;
use crate::helpers::plan::PAIR_LEN;
use crate::helpers::{Expect, MAX_EXPECTATIONS_PER_PACKET, Pairing, Replacement};
use crate::model::{Expectation, Tuple, status};
use crate::nat::ports::{Search, Shape};
use crate::netlink::ctnetlink;
use crate::netlink::queue;
use crate::netlink::socket::IoError;

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
        verdict: queue::NF_ACCEPT,
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
        Translated::Drop => {
            // As nf_nat_ftp: the announcement cannot go out right, so it does not go
            // out at all, and nothing stays open for it; the sender retransmits.
            a.verdict = queue::NF_DROP;
            a.attached = None;
            a.deferred.clear();
            withdraw(slot, ex, &applied, ctl);
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
        for (i, e) in exps.iter().enumerate() {
            // Attached or created after the verdict, each on its announced port.
            if let Some(port) = applied.ports.get_mut(i) {
                *port = Some(e.exp.dst_port);
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
            slot.stats.expectations += n;
            if let Some(secs) = timeout {
                set_timeout(slot, master, zone, &exp, port, secs, ctl);
            }
            debug!(
                "{}: expecting {} {} -> {}:{}{pair}{}",
                slot.name,
                exp.proto,
                exp.src,
                exp.dst,
                port,
                NatNote(&exp)
            );
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

/// What to do about a refused expectation, where the errno alone misleads: the kernel
/// answers EMFILE ("Too many open files") when its expectation table is full
/// (nf_conntrack_expect_max, 4 per 256 conntrack hash buckets by default: about 32 on a
/// small router) or when the master already has as many expectations of the class as its
/// policy allows and none could be evicted.
fn expectation_error_hint(e: &IoError) -> &'static str {
    match e.errno() {
        Some(Errno::EMFILE) => {
            " (the kernel's expectation table is full: raise sysctl \
             net.netfilter.nf_conntrack_expect_max; or this connection reached its class's \
             expect_max)"
        }
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

/// Ask for `exp` on `port`. A NAT expectation is created exclusively so that a port
/// another master holds is seen (write_exp_new); one this master already holds is
/// refreshed (its timer restarted) and keeps its port, as the kernel does.
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
    let mut exclusive = exp.nat.is_some();
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
        slot.stats.expectation_errors += 1;
        if slot.log_limit.allow(std::time::Instant::now(), slot.name) {
            warn!(
                "{}: cannot delete expectation {} -> {}:{}{context}: {e}",
                slot.name, t.src, t.dst, t.dst_port
            );
        }
    }
    result
}

/// Delete the pending expectations the plan names (by tuple: the kernel has no delete by
/// master). One that is gone already (expired, used, never made: ENOENT) is no error.
fn delete_planned(slot: &mut Slot, ex: &Examined, ctl: &mut Ctl<'_>) {
    for t in &ex.plan.deletions {
        if delete_expectation(slot, t, ex.conntrack.zone, ("", true), ctl).is_ok() {
            slot.stats.deleted += 1;
            debug!(
                "{}: deleted expectation {} -> {}:{}",
                slot.name, t.src, t.dst, t.dst_port
            );
        }
    }
}

/// Delete the expectations `apply` created over ctnetlink for a packet that is dropped
/// after all (as nf_nat_ftp's nf_ct_unexpect_related): nothing may stay open for an
/// announcement the peer never receives.
pub(super) fn withdraw(slot: &mut Slot, ex: &Examined, applied: &Applied, ctl: &mut Ctl<'_>) {
    if applied.attached.is_some() {
        // Unconfirmed master: attached to the verdict, which is now a drop without it,
        // or deferred, and now never created.
        return;
    }
    for (i, e) in ex.plan.expectations.iter().enumerate() {
        let Some(port) = applied.ports.get(i).copied().flatten() else {
            continue;
        };
        let t = Tuple {
            dst_port: port,
            ..e.exp.tuple()
        };
        if delete_expectation(
            slot,
            &t,
            ex.conntrack.zone,
            (" of a dropped packet", false),
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

/// Rewrite the announcements of a packet on a NATed connection into `buf`, with the
/// ports `apply` got for their expectations.
pub(super) fn rewrite(
    slot: &mut Slot,
    ex: &Examined,
    applied: &Applied,
    packet: &[u8],
    buf: &mut [u8],
) -> Rewritten {
    let plan = &ex.plan;
    let port_of = |i: usize| applied.ports.get(i).copied().flatten();
    // Without its expectation a rewritten announcement would name a translated
    // endpoint nobody expects, and an unrewritten one the real endpoint the peer
    // cannot reach (and should not learn): drop the packet so the sender
    // retransmits, as the kernel's nf_nat_ftp does.
    let master = Endpoints(&ex.conntrack.orig);
    let unexpected = plan.rewrites.iter().any(|rw| match rw.with {
        Replacement::Endpoint { expectation, .. } => port_of(expectation).is_none(),
        Replacement::Literal(_) | Replacement::Length { .. } => false,
    });
    if unexpected {
        slot.rewrite_failed(format_args!(
            "dropped a packet of {master}: no expectation for its NATed announcement"
        ));
        return Rewritten::Drop;
    }
    let result = match buf.get_mut(..packet.len()) {
        Some(copy) => {
            copy.copy_from_slice(packet);
            crate::nat::apply_rewrites(buf, packet.len(), plan, port_of)
        }
        None => Err(crate::nat::NatError::NoRoom {
            needed: packet.len(),
            available: buf.len(),
        }),
    };
    match result {
        Ok(r) if r.changed => {
            debug!(
                "{}: rewrote {} range(s) for NAT ({} -> {} bytes)",
                slot.name,
                plan.rewrites.len(),
                packet.len(),
                r.len
            );
            Rewritten::Packet(r.len)
        }
        Ok(_) => Rewritten::Unchanged,
        Err(e) => {
            // Passing it unchanged would leak the inside endpoint and leave a pinhole
            // nobody was told about.
            slot.rewrite_failed(format_args!(
                "dropped a packet of {master}: cannot rewrite its announcement for NAT: {e}"
            ));
            Rewritten::Drop
        }
    }
}

/// Record a payload length change of `delta` bytes in the packet's direction as the
/// kernel's nf_ct_seqadj_set would, over ctnetlink: read the conntrack's current
/// adjustment, apply the kernel's rule, write it back together with the helper's
/// private data.
pub(super) fn adjust_sequence(
    slot: &Slot,
    ex: &Examined,
    delta: i64,
    ctl: &mut Ctl<'_>,
) -> Result<(), IoError> {
    use crate::netlink::Error as NlError;
    let packet_seq = ex.tcp_seq.ok_or(NlError::Malformed("not TCP"))?;
    let delta = i32::try_from(delta).map_err(|_| NlError::Malformed("length change"))?;
    let (orig, zone, dir) = (&ex.conntrack.orig, ex.conntrack.zone, ex.dir);
    let mut current = None;
    ctl.request(
        |w, seq| ctnetlink::write_ct_get(w, seq, orig, zone),
        |msg| {
            if let Ok((_, attrs)) = msg.nfnl() {
                current = Some(ctnetlink::parse_seq_adj(attrs, dir));
            }
        },
    )?;
    let current = current.ok_or(NlError::Missing("conntrack"))??;
    let next = current.after_change(packet_seq, delta);
    let help = ex
        .plan
        .private_changed
        .then(|| (slot.name, &ex.private[..ex.private_len]));
    ctl.request(
        |w, seq| ctnetlink::write_ct_update(w, seq, orig, zone, dir, &next, help),
        |_| {},
    )?;
    debug!(
        "{}: sequence adjustment ({dir:?}) {current:?} -> {next:?}",
        slot.name
    );
    Ok(())
}

/// The NAT part of answering a packet with announcements to rewrite: the rewritten
/// packet in `mangle`, and for an IPv6 length change the sequence adjustment (with
/// the private data) set over ctnetlink, because the verdict path would record it at
/// a wrong position (the kernel reads the TCP header at ip_hdrlen(), an IPv4-only
/// offset; README "NAT"); the verdict must then carry no conntrack part.
pub(super) fn translate(
    slot: &mut Slot,
    ex: &Examined,
    applied: &Applied,
    packet: &[u8],
    mangle: &mut [u8],
    ctl: &mut Ctl<'_>,
) -> Translated {
    let len = match rewrite(slot, ex, applied, packet, mangle) {
        Rewritten::Packet(len) => len,
        Rewritten::Unchanged => return Translated::Unchanged,
        Rewritten::Drop => return Translated::Drop,
    };
    let mut private_written = false;
    if len != packet.len() && ex.conntrack.orig.src.is_ipv6() {
        let delta = len as i64 - packet.len() as i64;
        if let Err(e) = adjust_sequence(slot, ex, delta, ctl) {
            slot.rewrite_failed(format_args!(
                "dropped a packet of {}: cannot set its sequence adjustment: {e}",
                Endpoints(&ex.conntrack.orig)
            ));
            return Translated::Drop;
        }
        private_written = true;
    }
    slot.stats.rewritten += 1;
    Translated::Packet {
        len,
        private_written,
    }
}

/// What `translate` decided for a packet.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Translated {
    /// Send the original packet (the announcement was already right).
    Unchanged,
    /// Send `mangle[..len]`; `private_written`: the private data went out over
    /// ctnetlink with an IPv6 sequence adjustment.
    Packet { len: usize, private_written: bool },
    /// Drop the packet and withdraw its expectations.
    Drop,
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

/// What to send back for a packet with announcements to rewrite.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rewritten {
    /// The rewritten packet, `bufs.mangle[..len]`.
    Packet(usize),
    /// The original packet (already right).
    Unchanged,
    Drop,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::daemon::kernel::fake::*;
    use crate::daemon::test_fixtures::*;
    use crate::daemon::{CTL_BUF, MANGLE_BUF, examine, slots_from_config};
    use crate::helpers::Plan;
    use crate::helpers::ftp::EndpointText;
    use crate::nat::ports::NAT_PORT_ATTEMPTS;
    use crate::netlink::attr::Writer;
    use crate::netlink::ctnetlink::{
        CTA_EXPECT_TIMEOUT, CTA_EXPECT_TUPLE, IPCTNL_MSG_EXP_DELETE, IPCTNL_MSG_EXP_GET,
        IPCTNL_MSG_EXP_NEW, parse_tuple,
    };
    use crate::netlink::msg::Messages;
    use crate::netlink::msg::NLM_F_EXCL;
    use crate::netlink::subsys;
    use crate::private_cache::PrivateCache;
    use std::time::Instant;

    fn applied(port: Option<u16>) -> Applied {
        let mut ports = [None; MAX_EXPECTATIONS_PER_PACKET];
        ports[0] = port;
        Applied {
            attached: None,
            deferred: Expects::new(),
            ports,
        }
    }

    /// Make rewrite `i` of `plan` (an FTP 227) name `addr` instead.
    fn respell(plan: &mut Plan, i: usize, addr: core::net::IpAddr) {
        let spelling = EndpointText::Commas.spelling(addr, plan).unwrap();
        let Replacement::Endpoint { expectation, .. } = plan.rewrites[i].with else {
            panic!("not an endpoint");
        };
        plan.rewrites[i].with = Replacement::Endpoint {
            expectation,
            spelling,
        };
    }

    #[test]
    fn forwarded_227_is_rewritten_with_the_port_the_search_found() {
        let mut slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued_forwarded_227(&mut buf);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        let ex = examine(&mut slots, &mut PrivateCache::new(), &pkt, Instant::now()).unwrap();
        let exp = ex.plan.expectations[0].exp;
        assert_eq!(exp.dst, core::net::IpAddr::from([192, 0, 2, 1]));
        assert!(exp.nat.is_some());
        let mut out = [0u8; 2048];
        let slot = &mut slots[ex.slot];
        let got = rewrite(slot, &ex, &applied(Some(40001)), pkt.payload, &mut out);
        let Rewritten::Packet(len) = got else {
            panic!("not rewritten");
        };
        let d = crate::wire::dissect(&out[..len]).unwrap();
        assert_eq!(
            d.payload,
            b"227 Entering Passive Mode (192,0,2,1,156,65)\r\n"
        );
        assert_eq!(len, pkt.payload.len() - 3);
        assert_eq!(slot.stats.rewrite_errors, 0);

        // No expectation for the announcement: the packet is dropped, as nf_nat_ftp does.
        assert!(matches!(
            rewrite(slot, &ex, &applied(None), pkt.payload, &mut out),
            Rewritten::Drop
        ));
        assert_eq!(slot.stats.rewrite_errors, 1);

        // A buffer too small for the packet: dropped, counted (passing it unchanged
        // would leak the inside address next to an open pinhole).
        let mut tiny = [0u8; 40];
        assert_eq!(
            rewrite(slot, &ex, &applied(Some(40001)), pkt.payload, &mut tiny),
            Rewritten::Drop
        );
        assert_eq!(slot.stats.rewrite_errors, 2);

        // The announced endpoint already right (same address and port): nothing to send.
        let mut same = Plan {
            rewrites: ex.plan.rewrites.clone(),
            ..Plan::default()
        };
        respell(&mut same, 0, SERVER.into());
        let ex_same = Examined { plan: same, ..ex };
        assert!(matches!(
            rewrite(slot, &ex_same, &applied(Some(40000)), pkt.payload, &mut out),
            Rewritten::Unchanged
        ));
        assert_eq!(slot.stats.rewrite_errors, 2);
    }

    /// Run `answer` for one queued packet against `kernel`.
    fn answer_with(
        kernel: &mut FakeKernel,
        slot: &mut Slot,
        ex: &Examined,
        payload: &[u8],
        mangle: &mut [u8],
    ) -> Answer {
        let mut buf = vec![0u8; CTL_BUF];
        let mut rx = vec![0u8; CTL_BUF];
        let mut ctl = Ctl {
            link: kernel,
            buf: &mut buf,
            rx: &mut rx,
        };
        answer(slot, ex, payload, mangle, &mut ctl)
    }

    /// The forwarded-227 fixture, examined: (slots, examined, layer-3 packet).
    fn forwarded_227() -> (
        heapless::Vec<Slot, { crate::config::MAX_HELPERS }>,
        Examined,
        Vec<u8>,
    ) {
        let mut slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued_forwarded_227(&mut buf);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        let ex = examine(&mut slots, &mut PrivateCache::new(), &pkt, Instant::now()).unwrap();
        let payload = pkt.payload.to_vec();
        (slots, ex, payload)
    }

    /// The expectation tuple's destination port of an EXP request.
    fn exp_port(d: &[u8]) -> u16 {
        let m = Messages::new(d).next().unwrap().unwrap();
        let t: [Option<crate::netlink::attr::Attr>; 12] = m.nfnl().unwrap().1.table().unwrap();
        parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].unwrap())
            .unwrap()
            .dst_port
    }

    /// A plan's master timeout (SIP's sip_timeout) goes on the verdict of a confirmed
    /// conntrack only: on an unconfirmed one the kernel would add the current time twice.
    #[test]
    fn the_master_timeout_rides_on_verdicts_of_confirmed_conntracks_only() {
        let mut kernel = FakeKernel::acking();
        let (mut slots, mut ex, payload) = forwarded_227();
        ex.plan.expectations.clear();
        ex.plan.rewrites.clear();
        ex.plan.master_timeout = Some(3600);
        let mut mangle = vec![0u8; 2048];
        for (status, want) in [(status::CONFIRMED, Some(3600)), (0, None)] {
            ex.conntrack.status = status;
            let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
            assert_eq!(a.master_timeout, want, "status {status:#x}");
        }
        ex.plan.master_timeout = None;
        ex.conntrack.status = status::CONFIRMED;
        let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
        assert_eq!(a.master_timeout, None);
    }

    #[test]
    fn a_nat_rewrite_that_changes_the_length_makes_the_verdict_carry_nfqa_ct() {
        // A 227 at a line start whose segment does not end the line: the private data
        // does not change, the rewrite shortens the payload by 3 bytes. Without NFQA_CT
        // the kernel would not record the sequence adjustment and the TCP stream would
        // desynchronise.
        let slots = slots_from_config(&Config::default()).unwrap();
        let (mut slots2, mut ex, payload) = forwarded_227();
        let _ = slots;
        ex.plan.private_changed = false;
        let mut kernel = FakeKernel::acking();
        let mut mangle = vec![0u8; MANGLE_BUF];
        let a = answer_with(
            &mut kernel,
            &mut slots2[ex.slot],
            &ex,
            &payload,
            &mut mangle,
        );
        assert_eq!(a.verdict, queue::NF_ACCEPT);
        assert_eq!(a.rewritten_len, Some(payload.len() - 3));
        assert!(!a.help && a.seq_adjust);
        let v = queue::Verdict {
            payload: a.rewritten_len.map(|n| &mangle[..n]),
            seq_adjust: a.seq_adjust,
            ..queue::Verdict::plain(0, 1, a.verdict)
        };
        let mut tx = [0u8; 512];
        let mut w = Writer::new(&mut tx);
        queue::write_verdict(&mut w, 0, &v).unwrap();
        let m = Messages::new(w.as_slice()).next().unwrap().unwrap();
        let t: [Option<crate::netlink::attr::Attr>; 16] = m.nfnl().unwrap().1.table().unwrap();
        assert!(t[11].is_some(), "NFQA_CT present");

        // Same length (already the translated text): no adjustment asked for.
        let (mut slots3, mut ex, payload) = forwarded_227();
        ex.plan.private_changed = false;
        respell(&mut ex.plan, 0, [198, 51, 100, 22].into());
        let a = answer_with(
            &mut kernel,
            &mut slots3[ex.slot],
            &ex,
            &payload,
            &mut mangle,
        );
        assert_eq!(a.rewritten_len, Some(payload.len() + 1));
        assert!(a.seq_adjust, "longer is a change too");
    }

    #[test]
    fn a_rewrite_that_fails_drops_the_packet_and_deletes_its_expectation() {
        let (mut slots, ex, payload) = forwarded_227();
        let mut kernel = FakeKernel::acking();
        let mut tiny = [0u8; 40];
        let slot = &mut slots[ex.slot];
        let a = answer_with(&mut kernel, slot, &ex, &payload, &mut tiny);
        assert_eq!(a.verdict, queue::NF_DROP);
        assert_eq!(a.rewritten_len, None);
        assert_eq!(
            kernel.kinds(),
            vec![
                (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_NEW),
                (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_DELETE)
            ]
        );
        assert_eq!(exp_port(&kernel.sent.borrow()[1]), 156 * 256 + 64);
        assert_eq!((slot.stats.rewrite_errors, slot.stats.withdrawn), (1, 1));
        assert_eq!(slot.stats.rewritten, 0);
    }

    #[test]
    fn a_failed_ipv6_sequence_adjustment_drops_and_withdraws() {
        // An IPv6 master whose rewrite changes the length: the daemon must read the
        // conntrack's adjustment first; the kernel says ENOENT (the conntrack is gone).
        let (mut slots, mut ex, payload) = forwarded_227();
        let v6 = |s: &str| -> core::net::IpAddr { s.parse().unwrap() };
        ex.conntrack.orig.src = v6("2001:db8::9");
        ex.conntrack.orig.dst = v6("2001:db8::1");
        let mut kernel = FakeKernel::new(|m| {
            if m.header.subsys() == subsys::CTNETLINK {
                Reply::Errno(Errno::ENOENT)
            } else {
                Reply::Ack
            }
        });
        let mut mangle = vec![0u8; MANGLE_BUF];
        let slot = &mut slots[ex.slot];
        let a = answer_with(&mut kernel, slot, &ex, &payload, &mut mangle);
        assert_eq!(a.verdict, queue::NF_DROP);
        assert_eq!(
            kernel.kinds(),
            vec![
                (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_NEW),
                (subsys::CTNETLINK, ctnetlink::IPCTNL_MSG_CT_GET),
                (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_DELETE)
            ]
        );
        assert_eq!(slot.stats.withdrawn, 1);
    }

    #[test]
    fn our_own_pending_expectation_is_refreshed_with_its_timeout() {
        let (mut slots, ex, payload) = forwarded_227();
        let master = ex.conntrack.orig;
        let exp0 = ex.plan.expectations[0].exp;
        let mut kernel = FakeKernel::new(move |m| {
            match (m.header.nf_msg(), m.header.flags & NLM_F_EXCL != 0) {
                (IPCTNL_MSG_EXP_NEW, true) => Reply::Errno(Errno::EEXIST),
                (IPCTNL_MSG_EXP_GET, _) => {
                    // The kernel's answer: an expectation message naming its master.
                    let mut b = vec![0u8; 512];
                    let mut w = Writer::new(&mut b);
                    ctnetlink::write_exp_new(&mut w, m.header.seq, &exp0, &master, None, false, 1)
                        .unwrap();
                    let n = w.len();
                    Reply::Then(b[..n].to_vec())
                }
                _ => Reply::Ack,
            }
        });
        let mut mangle = vec![0u8; MANGLE_BUF];
        let slot = &mut slots[ex.slot];
        slot.classes[0].expect_timeout = 77;
        let a = answer_with(&mut kernel, slot, &ex, &payload, &mut mangle);
        assert_eq!(a.verdict, queue::NF_ACCEPT);
        let sent = kernel.sent.borrow();
        assert_eq!(sent.len(), 3, "NEW (exclusive), GET, NEW (refresh)");
        let refresh = Messages::new(&sent[2]).next().unwrap().unwrap();
        assert_eq!(refresh.header.flags & NLM_F_EXCL, 0);
        let t: [Option<crate::netlink::attr::Attr>; 12] =
            refresh.nfnl().unwrap().1.table().unwrap();
        assert_eq!(
            t[usize::from(CTA_EXPECT_TIMEOUT)].unwrap().be32().unwrap(),
            77,
            "a refresh without a timeout restarts no timer"
        );
        assert_eq!(exp_port(&sent[2]), exp0.dst_port, "keeps its port");
    }

    #[test]
    fn the_port_search_moves_on_and_stops_at_65535_without_overflow() {
        let (mut slots, ex, payload) = forwarded_227();
        // Two ports taken by other masters: the third is used and announced.
        let mut taken = 2;
        let mut kernel = FakeKernel::new(move |m| {
            if m.header.nf_msg() == IPCTNL_MSG_EXP_NEW && taken > 0 {
                taken -= 1;
                Reply::Errno(Errno::EBUSY)
            } else {
                Reply::Ack
            }
        });
        let mut mangle = vec![0u8; MANGLE_BUF];
        let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
        let n = a.rewritten_len.unwrap();
        let d = crate::wire::dissect(&mangle[..n]).unwrap();
        assert_eq!(
            d.payload,
            b"227 Entering Passive Mode (192,0,2,1,156,66)\r\n"
        );
        assert_eq!(exp_port(&kernel.sent.borrow()[2]), 156 * 256 + 66);

        // Announced 65535 and taken: one try, an error, no wrap-around, no panic.
        let (mut slots, mut ex, payload) = forwarded_227();
        ex.plan.expectations[0].exp.dst_port = u16::MAX;
        let mut kernel = FakeKernel::new(|_| Reply::Errno(Errno::EBUSY));
        let slot = &mut slots[ex.slot];
        let a = answer_with(&mut kernel, slot, &ex, &payload, &mut mangle);
        assert_eq!(a.verdict, queue::NF_DROP);
        assert_eq!(kernel.sent.borrow().len(), 1);
        assert_eq!(slot.stats.expectation_errors, 1);

        // Every port taken: NAT_PORT_ATTEMPTS tries, then the packet is dropped.
        let (mut slots, ex, payload) = forwarded_227();
        let mut kernel = FakeKernel::new(|_| Reply::Errno(Errno::EBUSY));
        let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
        assert_eq!(a.verdict, queue::NF_DROP);
        assert_eq!(kernel.sent.borrow().len(), usize::from(NAT_PORT_ATTEMPTS));
    }

    /// An RTP or RTCP expectation of a port-forwarded master, NATed back to the server.
    fn media(port: u16) -> Expectation {
        Expectation {
            class: 1,
            proto: crate::model::IPPROTO_UDP,
            src: [203, 0, 113, 9].into(),
            src_port: None,
            dst: [192, 0, 2, 1].into(),
            dst_port: port,
            flags: 0,
            nat: Some(crate::model::ExpectNat {
                dir: crate::model::Direction::Original,
                saved_addr: SERVER.into(),
                saved_port: port,
            }),
            helper: None,
        }
    }

    /// The forwarded-227 master with `plan` instead of the FTP helper's.
    fn with_plan(
        plan: Plan,
    ) -> (
        heapless::Vec<Slot, { crate::config::MAX_HELPERS }>,
        Examined,
    ) {
        let (slots, ex, _) = forwarded_227();
        (slots, Examined { plan, ..ex })
    }

    /// Run `apply` against `kernel`.
    fn apply_with(kernel: &mut FakeKernel, slot: &mut Slot, ex: &Examined) -> Applied {
        let mut buf = vec![0u8; CTL_BUF];
        let mut rx = vec![0u8; CTL_BUF];
        let mut ctl = Ctl {
            link: kernel,
            buf: &mut buf,
            rx: &mut rx,
        };
        apply(slot, ex, &mut ctl)
    }

    /// (message type, expectation port) of every request sent.
    fn requests(kernel: &FakeKernel) -> Vec<(u8, u16)> {
        let sent = kernel.sent.borrow();
        kernel
            .kinds()
            .into_iter()
            .zip(sent.iter())
            .map(|((_, kind), d)| (kind, exp_port(d)))
            .collect()
    }

    #[test]
    fn a_pair_moves_together_when_its_rtcp_port_is_taken() {
        let mut plan = Plan::default();
        assert_eq!(plan.expect_pair(media(5004), media(5005)), Some(0));
        let (mut slots, ex) = with_plan(plan);
        // Another master holds RTCP 5005 (and RTP 5008): RTP 5004 is withdrawn, the
        // pair moves to 5006/5007.
        let mut kernel = FakeKernel::new(|m| {
            let excl = m.header.flags & NLM_F_EXCL != 0;
            match (m.header.nf_msg(), exp_port_of(m)) {
                (IPCTNL_MSG_EXP_NEW, 5005 | 5008) if excl => Reply::Errno(Errno::EBUSY),
                _ => Reply::Ack,
            }
        });
        let slot = &mut slots[ex.slot];
        let applied = apply_with(&mut kernel, slot, &ex);
        assert_eq!(applied.ports[..2], [Some(5006), Some(5007)]);
        assert_eq!(
            requests(&kernel),
            [
                (IPCTNL_MSG_EXP_NEW, 5004),
                (IPCTNL_MSG_EXP_NEW, 5005),
                (IPCTNL_MSG_EXP_DELETE, 5004),
                (IPCTNL_MSG_EXP_NEW, 5006),
                (IPCTNL_MSG_EXP_NEW, 5007),
            ]
        );
        assert_eq!(
            (slot.stats.expectations, slot.stats.expectation_errors),
            (2, 0)
        );

        // A taken RTP port moves the pair to the next even port without touching RTCP.
        let mut plan = Plan::default();
        plan.expect_pair(media(5008), media(5009)).unwrap();
        let (mut slots, ex) = with_plan(plan);
        let applied = apply_with(&mut kernel, &mut slots[ex.slot], &ex);
        assert_eq!(applied.ports[..2], [Some(5010), Some(5011)]);
        assert_eq!(
            requests(&kernel)[5..],
            [
                (IPCTNL_MSG_EXP_NEW, 5008),
                (IPCTNL_MSG_EXP_NEW, 5010),
                (IPCTNL_MSG_EXP_NEW, 5011),
            ]
        );

        // A hard error on RTCP: neither is left, both count as errors.
        let mut plan = Plan::default();
        plan.expect_pair(media(6000), media(6001)).unwrap();
        let (mut slots, ex) = with_plan(plan);
        let mut kernel = FakeKernel::new(|m| match (m.header.nf_msg(), exp_port_of(m)) {
            (IPCTNL_MSG_EXP_NEW, 6001) => Reply::Errno(Errno::EPERM),
            _ => Reply::Ack,
        });
        let slot = &mut slots[ex.slot];
        let applied = apply_with(&mut kernel, slot, &ex);
        assert_eq!(applied.ports[..2], [None, None]);
        assert_eq!(
            requests(&kernel),
            [
                (IPCTNL_MSG_EXP_NEW, 6000),
                (IPCTNL_MSG_EXP_NEW, 6001),
                (IPCTNL_MSG_EXP_DELETE, 6000),
            ]
        );
        assert_eq!(
            (slot.stats.expectations, slot.stats.expectation_errors),
            (0, 2)
        );
    }

    /// The expectation tuple's destination port of a request as the fake kernel sees it.
    fn exp_port_of(m: &crate::netlink::msg::Message<'_>) -> u16 {
        let t: [Option<crate::netlink::attr::Attr>; 12] = m.nfnl().unwrap().1.table().unwrap();
        t[usize::from(CTA_EXPECT_TUPLE)].map_or(0, |a| parse_tuple(a).unwrap().dst_port)
    }

    #[test]
    fn deletions_come_first_and_a_gone_expectation_is_no_error() {
        let mut plan = Plan::default();
        for port in [7000, 7002, 7004] {
            assert!(plan.delete(media(port).tuple()));
        }
        plan.expect(media(7000)).unwrap();
        let (mut slots, ex) = with_plan(plan);
        let mut kernel = FakeKernel::new(|m| match (m.header.nf_msg(), exp_port_of(m)) {
            (IPCTNL_MSG_EXP_DELETE, 7002) => Reply::Errno(Errno::ENOENT),
            (IPCTNL_MSG_EXP_DELETE, 7004) => Reply::Errno(Errno::EPERM),
            _ => Reply::Ack,
        });
        let slot = &mut slots[ex.slot];
        let applied = apply_with(&mut kernel, slot, &ex);
        // Deleted first, so a re-INVITE may ask for the same tuple again.
        assert_eq!(
            requests(&kernel),
            [
                (IPCTNL_MSG_EXP_DELETE, 7000),
                (IPCTNL_MSG_EXP_DELETE, 7002),
                (IPCTNL_MSG_EXP_DELETE, 7004),
                (IPCTNL_MSG_EXP_NEW, 7000),
            ]
        );
        assert_eq!(applied.ports[0], Some(7000));
        let s = slot.stats;
        assert_eq!((s.deleted, s.expectation_errors, s.expectations), (1, 1, 1));
        // The deletion names the tuple only (and the zone): the kernel finds it so.
        let sent = kernel.sent.borrow();
        let m = Messages::new(&sent[0]).next().unwrap().unwrap();
        let t: [Option<crate::netlink::attr::Attr>; 12] = m.nfnl().unwrap().1.table().unwrap();
        assert_eq!(
            parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].unwrap()).unwrap(),
            media(7000).tuple()
        );
        assert!(t[usize::from(ctnetlink::CTA_EXPECT_MASTER)].is_none());
    }

    #[test]
    fn an_unconfirmed_master_attaches_the_first_and_defers_the_rest() {
        let mut plan = Plan::default();
        plan.expect_pair(media(5004), media(5005)).unwrap();
        plan.expect(media(6000)).unwrap();
        plan.expect_pair(media(7000), media(7001)).unwrap();
        let (mut slots, mut ex) = with_plan(plan);
        ex.conntrack.status &= !status::CONFIRMED;
        let mut kernel = FakeKernel::acking();
        let mut mangle = vec![0u8; MANGLE_BUF];
        let slot = &mut slots[ex.slot];
        let a = answer_with(&mut kernel, slot, &ex, &[], &mut mangle);
        assert!(
            kernel.sent.borrow().is_empty(),
            "nothing before the verdict"
        );
        assert_eq!(a.attached.map(|e| e.dst_port), Some(5004));
        let deferred: Vec<_> = a
            .deferred
            .iter()
            .map(|e| (e.exp.dst_port, e.pairing))
            .collect();
        assert_eq!(
            deferred,
            [
                // Its RTP half rides on the verdict: on its own now.
                (5005, Pairing::Single),
                (6000, Pairing::Single),
                (7000, Pairing::Rtp),
                (7001, Pairing::Rtcp),
            ]
        );
        assert_eq!(slot.stats.expectations, 1, "the others count when created");
    }
}
