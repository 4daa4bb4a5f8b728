//! The NAT part of answering a packet (see `effects`): the plan's rewrites made in a
//! copy of the packet with the ports its expectations got, the IPv6 sequence
//! adjustment set over ctnetlink, and what to do when either cannot be done.

use log::debug;

use super::{Applied, Endpoints};
use crate::daemon::kernel::Ctl;
use crate::daemon::serve::Examined;
use crate::daemon::slots::Slot;
use crate::helpers::Replacement;
use crate::netlink::ctnetlink;
use crate::netlink::socket::IoError;

/// What happens to a packet whose NAT rewrite failed, for the log.
fn failed_verb(plan: &crate::helpers::Plan) -> &'static str {
    if plan.pass_unrewritable {
        "passed unchanged (its NAT expectations withdrawn)"
    } else {
        "dropped"
    }
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
            "{} a packet of {master}: no expectation for its NATed announcement",
            failed_verb(plan)
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
                "{} a packet of {master}: cannot rewrite its announcement for NAT: {e}",
                failed_verb(plan)
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
                "{} a packet of {}: cannot set its sequence adjustment: {e}",
                failed_verb(&ex.plan),
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

/// What to send back for a packet with announcements to rewrite.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rewritten {
    /// The rewritten packet, `bufs.mangle[..len]`.
    Packet(usize),
    /// The original packet (already right).
    Unchanged,
    Drop,
}
