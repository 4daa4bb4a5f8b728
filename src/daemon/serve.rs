//! Serving the queue: read queued packets, find and run their helper (`examine`, pure),
//! carry out the outcome (`effects`) and answer every packet with a verdict, in batches.

use log::{debug, warn};
use nix::errno::Errno;

use super::effects::answer;
use super::kernel::{Ctl, push_verdict};
use super::{BATCH, Daemon, Slot};
use crate::helpers::{Action, PRIVATE_DATA_MAX, Packet};
use crate::model::{Conntrack, ctinfo};
use crate::netlink::ctnetlink::{self, CtAttrs};
use crate::netlink::msg::{Messages, NLMSG_ERROR};
use crate::netlink::socket::{IoError, Link};
use crate::netlink::{queue, subsys};
use crate::private_cache::PrivateCache;
use crate::wire;

/// Why a packet was passed without being looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NoConntrack,
    BadConntrack(crate::netlink::Error),
    UnknownHelper,
    Truncated,
    Undissectable(wire::Error),
}

/// The outcome of running a helper on one queued packet.
pub struct Examined {
    pub slot: usize,
    pub conntrack: Conntrack,
    /// The packet's direction and, for TCP, its sequence number.
    pub dir: crate::model::Direction,
    pub tcp_seq: Option<u32>,
    pub action: Action,
    pub private: [u8; PRIVATE_DATA_MAX],
    pub private_len: usize,
}

/// Find the helper for a queued packet and run it, with the newest private data of the
/// kernel's copy and the one this daemon wrote last (`cache`). No I/O.
pub fn examine(
    slots: &[Slot],
    cache: &mut PrivateCache,
    pkt: &queue::QueuedPacket<'_>,
    now: std::time::Instant,
) -> Result<Examined, Skip> {
    let ct_bytes = pkt.ct.ok_or(Skip::NoConntrack)?;
    let CtAttrs {
        conntrack,
        helper_name,
        help_info,
    } = ctnetlink::parse_conntrack(ct_bytes).map_err(Skip::BadConntrack)?;
    let name = helper_name.ok_or(Skip::UnknownHelper)?;
    let slot = slots
        .iter()
        .position(|s| s.serves(name, pkt.queue, conntrack.orig.proto))
        .ok_or(Skip::UnknownHelper)?;
    if pkt.is_truncated() {
        return Err(Skip::Truncated);
    }
    let d = wire::dissect(pkt.payload).map_err(Skip::Undissectable)?;
    let help_info = cache.newest(conntrack.id, &conntrack.orig, help_info, now);
    let dir = ctinfo::direction(pkt.ct_info.unwrap_or(ctinfo::NEW));
    let packet = Packet::from_dissected(dir, &d);
    // Shared with `replay`: the decoded-input half of examining a packet.
    let crate::helpers::Run {
        action,
        private,
        private_len,
    } = crate::helpers::run(
        slots[slot].builtin,
        &packet,
        &conntrack,
        help_info,
        slots[slot].policy,
    );
    let tcp_seq = match d.transport {
        crate::helpers::Transport::Tcp { seq, .. } => Some(seq),
        crate::helpers::Transport::Udp => None,
    };
    Ok(Examined {
        slot,
        conntrack,
        dir,
        tcp_seq,
        action,
        private,
        private_len,
    })
}

impl Daemon {
    /// Handle queued packets without blocking — up to BATCH when `greedy`, else the
    /// first one — and send their verdicts in one send. Returns how many packets were
    /// handled. Every packet whose id can be read gets a verdict.
    pub(super) fn serve_batch(&mut self, greedy: bool) -> Result<usize, IoError> {
        let mut handled = 0;
        let mut tx_len = 0;
        let now = std::time::Instant::now();
        while handled < BATCH && (greedy || handled == 0) {
            let datagram = match self.queue_sock.recv(&mut self.bufs.rx, true)? {
                Some(d) => d,
                None => break,
            };
            let datagram_len = datagram.len();
            if let Some(r) = self.recorder.as_mut() {
                r.record(&self.bufs.rx[..datagram_len]);
            }
            for msg in Messages::new(&self.bufs.rx[..datagram_len]) {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        warn!("undecodable message on the queue socket: {e}");
                        break;
                    }
                };
                if msg.header.kind == NLMSG_ERROR {
                    if let Ok(Some(err)) = msg.error()
                        && err.errno != 0
                    {
                        self.verdict_errors += 1;
                        warn!("kernel refused a verdict: {:?}", Errno::from_raw(err.errno));
                    }
                    continue;
                }
                if msg.header.subsys() != subsys::QUEUE {
                    continue;
                }
                let pkt = match queue::parse_packet(&msg) {
                    Ok(p) => p,
                    Err(e) => {
                        warn!("undecodable queued packet: {e}");
                        if let Some((queue, id)) = queue::packet_ref(&msg) {
                            handled += 1;
                            self.unhandled += 1;
                            let v = queue::Verdict::plain(queue, id, queue::NF_ACCEPT);
                            tx_len = push_verdict(&self.queue_sock, &mut self.bufs.tx, tx_len, &v)?;
                        }
                        continue;
                    }
                };
                handled += 1;
                let answer = match examine(&self.slots, &mut self.private_cache, &pkt, now) {
                    Ok(ex) => {
                        let slot = &mut self.slots[ex.slot];
                        let mut ctl = Ctl {
                            link: &mut self.ctl_sock,
                            buf: &mut self.bufs.ctl,
                            rx: &mut self.bufs.ctl_rx,
                        };
                        let a = answer(slot, &ex, pkt.payload, &mut self.bufs.mangle, &mut ctl);
                        if a.help || a.private_written {
                            self.private_cache.record(
                                ex.conntrack.id,
                                &ex.conntrack.orig,
                                &ex.private[..ex.private_len],
                                now,
                            );
                        }
                        Some((a, ex.slot, ex.private, ex.private_len))
                    }
                    Err(skip) => {
                        self.unhandled += 1;
                        debug!("packet {} passed without help: {skip:?}", pkt.id);
                        None
                    }
                };
                let v = match &answer {
                    Some((a, slot, private, private_len)) => queue::Verdict {
                        queue: pkt.queue,
                        id: pkt.id,
                        verdict: a.verdict,
                        help: a.help.then(|| queue::HelpUpdate {
                            helper_name: self.slots[*slot].name,
                            info: &private[..*private_len],
                        }),
                        expectation: a.attached.as_ref(),
                        payload: a.rewritten_len.and_then(|n| self.bufs.mangle.get(..n)),
                        seq_adjust: a.seq_adjust,
                    },
                    None => queue::Verdict::plain(pkt.queue, pkt.id, queue::NF_ACCEPT),
                };
                tx_len = push_verdict(&self.queue_sock, &mut self.bufs.tx, tx_len, &v)?;
            }
        }
        if tx_len > 0 {
            self.queue_sock.send(&self.bufs.tx[..tx_len])?;
        }
        Ok(handled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::daemon::slots_from_config;
    use crate::daemon::test_fixtures::*;
    use crate::netlink::msg::Messages;
    use std::time::Instant;

    #[test]
    fn private_data_carries_line_state_from_one_packet_to_the_next() {
        let slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let banner = b"220 welcome\r\n";
        let n = queued(&mut buf, Some("ftp"), &[0; 32], 1000, banner, true);
        let first = run(&slots, &buf[..n]).unwrap();
        assert!(first.action.expectations.is_empty());
        assert!(first.action.private_changed);

        // The kernel hands the updated private data back with the next packet.
        let info = first.private[..first.private_len].to_vec();
        let reply = b"227 Entering Passive Mode (198,51,100,2,156,64)\r\n";
        let n = queued(
            &mut buf,
            Some("ftp"),
            &info,
            1000 + banner.len() as u32,
            reply,
            true,
        );
        let second = run(&slots, &buf[..n]).unwrap();
        let exp = second.action.expectations.first().expect("an expectation");
        assert_eq!(exp.dst, core::net::IpAddr::from(SERVER));
        assert_eq!(exp.dst_port, 156 * 256 + 64);
        assert_eq!(exp.src, core::net::IpAddr::from(CLIENT));

        // Without that state (a fresh private area) the same reply is not at a known
        // line start, so nothing is expected.
        let n = queued(
            &mut buf,
            Some("ftp"),
            &[0; 32],
            1000 + banner.len() as u32,
            reply,
            true,
        );
        assert!(
            run(&slots, &buf[..n])
                .unwrap()
                .action
                .expectations
                .is_empty()
        );
    }

    #[test]
    fn packets_the_daemon_cannot_help_are_skipped_not_fatal() {
        let slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued(&mut buf, Some("ftp"), &[0; 32], 1, b"x", false);
        assert_eq!(run(&slots, &buf[..n]).err(), Some(Skip::NoConntrack));
        let n = queued(&mut buf, None, &[], 1, b"x", true);
        assert_eq!(run(&slots, &buf[..n]).err(), Some(Skip::UnknownHelper));
        let n = queued(&mut buf, Some("irc"), &[0; 32], 1, b"x", true);
        assert_eq!(run(&slots, &buf[..n]).err(), Some(Skip::UnknownHelper));
        // A short private area from the kernel is zero-extended, not an error.
        let n = queued(&mut buf, Some("ftp"), &[0; 3], 1, b"x", true);
        assert!(run(&slots, &buf[..n]).is_ok());
    }

    /// The first packet of a TFTP connection as the kernel queues it: an unconfirmed
    /// conntrack, CT_INFO NEW, helper "tftp" with no private data, on its default queue.
    fn queued_tftp(buf: &mut [u8], payload: &[u8]) -> usize {
        use crate::model::IPPROTO_UDP;
        let ip = crate::wire::ipv4::tests::build(
            CLIENT,
            SERVER,
            IPPROTO_UDP,
            &crate::wire::udp::tests::build(40000, 69, payload),
        );
        let ct = CtFixture {
            tuples: tuples(IPPROTO_UDP, 69),
            status: 0,
            helper: Some("tftp"),
            info: None,
            ct_info: ctinfo::NEW,
        };
        write_queued(buf, Config::default().queue_of(1), &ip, Some(&ct))
    }

    #[test]
    fn tftp_request_on_an_unconfirmed_conntrack_asks_for_one_expectation() {
        let slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued_tftp(&mut buf, b"\x00\x01blob.bin\x00octet\x00");
        let ex = run(&slots, &buf[..n]).unwrap();
        assert_eq!(slots[ex.slot].name, "tftp");
        assert_eq!(slots[ex.slot].queue, Config::default().queue_of(1));
        assert_eq!(ex.private_len, 0);
        assert!(!ex.action.private_changed && !ex.action.parse_error);
        let exp = ex.action.expectations.first().expect("an expectation");
        assert_eq!(ex.action.expectations.len(), 1);
        assert_eq!(exp.src, core::net::IpAddr::from(SERVER));
        assert_eq!(exp.dst, core::net::IpAddr::from(CLIENT));
        assert_eq!((exp.src_port, exp.dst_port), (None, 40000));

        let n = queued_tftp(&mut buf, b"\x00\x01blob.bin\x00oct");
        let ex = run(&slots, &buf[..n]).unwrap();
        assert!(ex.action.parse_error && ex.action.expectations.is_empty());
    }

    #[test]
    fn examine_hands_the_configured_policy_to_the_helper() {
        let mut buf = [0u8; 1024];
        let n = queued_forwarded(
            &mut buf,
            b"227 Entering Passive Mode (198,51,100,2,0,22)\r\n",
        );
        let slots = slots_from_config(&Config::default()).unwrap();
        let ex = run(&slots, &buf[..n]).unwrap();
        assert!(ex.action.expectations.is_empty());
        assert_eq!(
            ex.action.refusals.first().map(|r| r.reason),
            Some(crate::helpers::RefusalReason::LowPort)
        );
        let mut cfg = Config::default();
        cfg.helpers[0].allow_low_ports = true;
        let slots = slots_from_config(&cfg).unwrap();
        assert!(slots[0].policy.allow_low_ports);
        let ex = run(&slots, &buf[..n]).unwrap();
        assert_eq!(ex.action.expectations.first().map(|e| e.dst_port), Some(22));
    }

    #[test]
    fn a_second_packet_in_flight_sees_the_first_ones_private_data() {
        // Two reply segments of one connection queued before the first verdict: both
        // carry the same (old) private data. The second starts where the first ended,
        // a line start only the first one's update records.
        let slots = slots_from_config(&Config::default()).unwrap();
        let mut cache = PrivateCache::new();
        let now = Instant::now();
        let mut st = crate::helpers::ftp::State::default();
        st.record_line_start(crate::model::Direction::Reply, 1000);
        let mut old = [0u8; 32];
        st.encode(&mut old);
        let banner = b"220 welcome\r\n";
        let reply = b"227 Entering Passive Mode (198,51,100,2,156,64)\r\n";
        let mut buf = [0u8; 1024];
        let n = queued(&mut buf, Some("ftp"), &old, 1000, banner, true);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        let first = examine(&slots, &mut cache, &pkt, now).unwrap();
        assert!(first.action.private_changed);
        // What serve_batch does when the verdict carries the private data.
        cache.record(
            first.conntrack.id,
            &first.conntrack.orig,
            &first.private[..first.private_len],
            now,
        );
        let n = queued(
            &mut buf,
            Some("ftp"),
            &old,
            1000 + banner.len() as u32,
            reply,
            true,
        );
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        let second = examine(&slots, &mut cache, &pkt, now).unwrap();
        assert_eq!(second.action.expectations.len(), 1);
        assert_eq!(cache.used, 1);
    }
}
