//! Serving the queue: read queued packets, find and run their helper (`examine`, pure),
//! carry out the outcome (`effects`) and answer every packet with a verdict, in batches.
//! Expectations of a master the kernel has not confirmed yet (all but the one that rides
//! on the verdict) wait in a fixed list until the verdicts are sent, which confirms it.

use log::{debug, info, warn};
use nix::errno::Errno;

use super::effects::{self, answer};
use super::kernel::{Ctl, Verdicts};
use super::{BATCH, Daemon, Recorder, Slot};
use crate::helpers::{Expect, PRIVATE_DATA_MAX, Packet, Pairing, Plan};
use crate::model::{Conntrack, Tuple, ctinfo, status};
use crate::netlink::ctnetlink::{self, CtAttrs};
use crate::netlink::msg::{Messages, NLMSG_ERROR};
use crate::netlink::socket::{IoError, Link};
use crate::netlink::{queue, subsys};
use crate::private_cache::PrivateCache;
use crate::wire;

/// Expectations waiting for their packets' verdicts to be sent. When a packet brings
/// more than fit, the verdicts so far are sent early and the waiting ones created, so
/// none is ever dropped; one packet's always fit.
pub(super) const DEFERRED_MAX: usize = 64;
const _: () = assert!(DEFERRED_MAX >= crate::helpers::MAX_EXPECTATIONS_PER_PACKET);

/// Why a packet was passed without being looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A packet of an expected connection (a data connection that inherited the helper
    /// of its master, as some kernels do) that the helper of slot `.0` does not analyse:
    /// accepted at once, counted as that helper's `expected_passed`.
    Expected(usize),
    /// A packet without payload (a pure ACK, a SYN or FIN): nothing for the helper of
    /// slot `.0` to read. Accepted before the private data is looked up or the helper
    /// runs; counted in the helper's `packets`.
    NoPayload(usize),
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
    pub plan: Plan,
    pub private: [u8; PRIVATE_DATA_MAX],
    pub private_len: usize,
    /// A message of this packet did not fit the helper's TCP reassembly buffers (it
    /// passes unparsed; counted in the pool, logged by `effects::apply`).
    pub stream_overflow: bool,
}

/// Find the helper for a queued packet and run it, with the newest private data of the
/// kernel's copy and the one this daemon wrote last (`cache`), and the slot's store. No
/// I/O.
pub fn examine(
    slots: &mut [Slot],
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
    let expected = conntrack.status & status::EXPECTED != 0;
    if expected && !slots.get(slot).is_some_and(|s| s.builtin.helps_expected) {
        // The cheapest answer: no parsing, no private data, no ctnetlink.
        return Err(Skip::Expected(slot));
    }
    if pkt.is_truncated() {
        return Err(Skip::Truncated);
    }
    let d = wire::dissect(pkt.payload).map_err(Skip::Undissectable)?;
    if d.payload.is_empty() {
        return Err(Skip::NoPayload(slot));
    }
    let help_info = cache.newest(conntrack.id, &conntrack.orig, help_info, now);
    let dir = ctinfo::direction(pkt.ct_info.unwrap_or(ctinfo::NEW));
    let packet = Packet::from_dissected(dir, &d);
    let s = slots.get_mut(slot).ok_or(Skip::UnknownHelper)?;
    if expected && !s.builtin.helper.helps_expected(&packet) {
        return Err(Skip::Expected(slot));
    }
    let overflows = |s: &Slot| s.store.streams.as_ref().map_or(0, |p| p.overflows);
    let overflows_before = overflows(s);
    // Shared with `replay`: the decoded-input half of examining a packet.
    let crate::helpers::Run {
        plan,
        private,
        private_len,
    } = crate::helpers::run(
        s.builtin,
        &packet,
        &conntrack,
        help_info,
        &mut s.store,
        s.policy,
    );
    let stream_overflow = overflows(s) != overflows_before;
    let tcp_seq = match d.transport {
        crate::helpers::Transport::Tcp { seq, .. } => Some(seq),
        crate::helpers::Transport::Udp => None,
    };
    Ok(Examined {
        slot,
        conntrack,
        dir,
        tcp_seq,
        plan,
        private,
        private_len,
        stream_overflow,
    })
}

/// An expectation of an unconfirmed master, to create once its packet's verdict is sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deferred {
    slot: usize,
    master: Tuple,
    zone: Option<u16>,
    exp: Expect,
}

type DeferredList = heapless::Vec<Deferred, DEFERRED_MAX>;

/// What serving a batch works with, borrowed apart from the daemon, so that tests can put
/// scripted kernels behind both sockets.
pub(super) struct Server<'a> {
    pub(super) queue: &'a dyn Link,
    pub(super) ctl: Ctl<'a>,
    pub(super) rx: &'a mut [u8],
    pub(super) tx: &'a mut [u8],
    pub(super) mangle: &'a mut [u8],
    pub(super) slots: &'a mut [Slot],
    pub(super) cache: &'a mut PrivateCache,
    pub(super) recorder: Option<&'a mut Recorder>,
    pub(super) verdict_errors: &'a mut u64,
    pub(super) unhandled: &'a mut u64,
}

impl Daemon {
    /// Handle queued packets without blocking — up to BATCH when `greedy`, else the
    /// first one — and send their verdicts in one send. Returns how many packets were
    /// handled. Every packet whose id can be read gets a verdict.
    pub(super) fn serve_batch(&mut self, greedy: bool) -> Result<usize, IoError> {
        Server::over(
            &self.queue_sock,
            &mut self.ctl_sock,
            &mut self.bufs,
            &mut self.slots,
            &mut self.private_cache,
            self.recorder.as_mut(),
            (&mut self.verdict_errors, &mut self.unhandled),
        )
        .batch(greedy)
    }
}

/// The daemon's packet path without its sockets: the slots, private-data cache and
/// buffers `Daemon::start` sets up, served by the code `Daemon::serve_batch` runs, over
/// links the caller provides. For tests that put a scripted kernel behind both sockets
/// from outside the crate (tests/no_alloc.rs: no allocation per packet); the daemon
/// itself does not use it.
#[doc(hidden)]
pub struct PacketPath {
    slots: heapless::Vec<Slot, { crate::config::MAX_HELPERS }>,
    bufs: super::Buffers,
    private_cache: PrivateCache,
    verdict_errors: u64,
    unhandled: u64,
}

impl PacketPath {
    /// What `Daemon::start` allocates for serving packets: the slots of `cfg`'s enabled
    /// helpers (with their stores), the private-data cache and the buffers.
    pub fn new(cfg: &crate::config::Config) -> Result<PacketPath, String> {
        Ok(PacketPath {
            slots: super::slots_from_config(cfg)?,
            bufs: super::Buffers::new(),
            private_cache: PrivateCache::new(),
            verdict_errors: 0,
            unhandled: 0,
        })
    }

    /// `Daemon::serve_batch` with `queue` as the queue socket and `ctl` as the control
    /// socket (no recorder).
    pub fn serve_batch(
        &mut self,
        queue: &dyn Link,
        ctl: &mut dyn Link,
        greedy: bool,
    ) -> Result<usize, IoError> {
        Server::over(
            queue,
            ctl,
            &mut self.bufs,
            &mut self.slots,
            &mut self.private_cache,
            None,
            (&mut self.verdict_errors, &mut self.unhandled),
        )
        .batch(greedy)
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Verdicts the kernel refused, and packets passed without a helper (the daemon's
    /// `status` globals).
    pub fn counters(&self) -> (u64, u64) {
        (self.verdict_errors, self.unhandled)
    }
}

impl<'a> Server<'a> {
    /// The packet path over the `queue` and `ctl` links with the daemon's buffers.
    fn over(
        queue: &'a dyn Link,
        ctl: &'a mut dyn Link,
        bufs: &'a mut super::Buffers,
        slots: &'a mut [Slot],
        cache: &'a mut PrivateCache,
        recorder: Option<&'a mut Recorder>,
        (verdict_errors, unhandled): (&'a mut u64, &'a mut u64),
    ) -> Server<'a> {
        let (rx, tx, mangle) = super::packet_parts(&mut bufs.packet);
        Server {
            queue,
            ctl: Ctl {
                link: ctl,
                buf: &mut bufs.ctl,
                rx: &mut bufs.ctl_rx,
            },
            rx,
            tx,
            mangle,
            slots,
            cache,
            recorder,
            verdict_errors,
            unhandled,
        }
    }
}

impl Server<'_> {
    /// See [`Daemon::serve_batch`]. The verdicts are sent before the deferred
    /// expectations are created.
    pub(super) fn batch(&mut self, greedy: bool) -> Result<usize, IoError> {
        let mut handled = 0;
        let mut verdicts = Verdicts::new(self.queue, self.tx);
        let mut deferred = DeferredList::new();
        let now = std::time::Instant::now();
        while handled < BATCH && (greedy || handled == 0) {
            let datagram = match self.queue.recv(self.rx, true)? {
                Some(d) => d,
                None => break,
            };
            let datagram_len = datagram.len();
            if let Some(r) = self.recorder.as_mut() {
                r.record(&self.rx[..datagram_len]);
            }
            for msg in Messages::new(&self.rx[..datagram_len]) {
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
                        *self.verdict_errors += 1;
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
                            *self.unhandled += 1;
                            verdicts.push(&queue::Verdict::plain(queue, id, queue::PASS))?;
                        }
                        continue;
                    }
                };
                handled += 1;
                let answer = match examine(self.slots, self.cache, &pkt, now) {
                    Ok(ex) => {
                        let slot = &mut self.slots[ex.slot];
                        let a = answer(slot, &ex, pkt.payload, self.mangle, &mut self.ctl);
                        if a.help || a.private_written {
                            self.cache.record(
                                ex.conntrack.id,
                                &ex.conntrack.orig,
                                &ex.private[..ex.private_len],
                                now,
                            );
                        }
                        Some((a, ex))
                    }
                    Err(Skip::Expected(slot)) => {
                        if let Some(s) = self.slots.get_mut(slot) {
                            s.stats.expected_passed += 1;
                            if s.stats.expected_passed == 1 {
                                info!(
                                    "{}: the kernel hands this helper packets of expected \
                                     connections (they inherit their master's helper on \
                                     this kernel); they are accepted at once and counted \
                                     as expected_passed",
                                    s.name
                                );
                            }
                        }
                        None
                    }
                    Err(Skip::NoPayload(slot)) => {
                        if let Some(s) = self.slots.get_mut(slot) {
                            s.stats.packets += 1;
                        }
                        None
                    }
                    Err(skip) => {
                        *self.unhandled += 1;
                        debug!("packet {} passed without help: {skip:?}", pkt.id);
                        None
                    }
                };
                let v = match &answer {
                    Some((a, ex)) => queue::Verdict {
                        queue: pkt.queue,
                        id: pkt.id,
                        verdict: a.verdict,
                        help: a.help.then(|| queue::HelpUpdate {
                            helper_name: self.slots[ex.slot].name,
                            info: &ex.private[..ex.private_len],
                        }),
                        expectation: a.attached.as_ref(),
                        payload: a.rewritten_len.and_then(|n| self.mangle.get(..n)),
                        seq_adjust: a.seq_adjust,
                        timeout: a.master_timeout,
                    },
                    None => queue::Verdict::plain(pkt.queue, pkt.id, queue::PASS),
                };
                verdicts.push(&v)?;
                let Some((a, ex)) = answer else {
                    continue;
                };
                if deferred.len() + a.deferred.len() > deferred.capacity() {
                    // No room: send the verdicts so far (this packet's too), then create
                    // what waited for them.
                    verdicts.send()?;
                    create_deferred(self.slots, &mut self.ctl, &mut deferred);
                }
                for exp in a.deferred {
                    // Cannot fail: the list had room for all of them.
                    let _ = deferred.push(Deferred {
                        slot: ex.slot,
                        master: ex.conntrack.orig,
                        zone: ex.conntrack.zone,
                        exp,
                    });
                }
            }
        }
        verdicts.send()?;
        create_deferred(self.slots, &mut self.ctl, &mut deferred);
        Ok(handled)
    }
}

/// Create the expectations that waited for their masters' verdicts (the kernel has
/// confirmed the masters while processing them), each on its announced port: the packets
/// that name them are gone. An RTP/RTCP pair is still created both or neither.
fn create_deferred(slots: &mut [Slot], ctl: &mut Ctl<'_>, list: &mut DeferredList) {
    let mut i = 0;
    while let Some(d) = list.get(i) {
        let rtcp = list.get(i + 1).filter(|n| {
            d.exp.pairing == Pairing::Rtp
                && n.exp.pairing == Pairing::Rtcp
                && (n.slot, n.master) == (d.slot, d.master)
        });
        let group = [Some(d.exp.exp), rtcp.map(|n| n.exp.exp)];
        if let Some(slot) = slots.get_mut(d.slot) {
            let timeout = d.exp.timeout.filter(|_| rtcp.is_none());
            effects::create(slot, &d.master, d.zone, group, timeout, false, ctl);
        }
        i += 1 + usize::from(rtcp.is_some());
    }
    list.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::daemon::slots_from_config;
    use crate::daemon::test_fixtures::*;
    use crate::model::{IPPROTO_TCP, status};
    use crate::netlink::msg::Messages;
    use std::time::Instant;

    #[test]
    fn private_data_carries_line_state_from_one_packet_to_the_next() {
        let mut slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let banner = b"220 welcome\r\n";
        let n = queued(&mut buf, Some("ftp"), &[0; 32], 1000, banner, true);
        let first = run(&mut slots, &buf[..n]).unwrap();
        assert!(first.plan.expectations.is_empty());
        assert!(first.plan.private_changed);

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
        let second = run(&mut slots, &buf[..n]).unwrap();
        let exp = second
            .plan
            .expectations
            .first()
            .expect("an expectation")
            .exp;
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
            run(&mut slots, &buf[..n])
                .unwrap()
                .plan
                .expectations
                .is_empty()
        );
    }

    #[test]
    fn packets_the_daemon_cannot_help_are_skipped_not_fatal() {
        let mut slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued(&mut buf, Some("ftp"), &[0; 32], 1, b"x", false);
        assert_eq!(run(&mut slots, &buf[..n]).err(), Some(Skip::NoConntrack));
        let n = queued(&mut buf, None, &[], 1, b"x", true);
        assert_eq!(run(&mut slots, &buf[..n]).err(), Some(Skip::UnknownHelper));
        let n = queued(&mut buf, Some("irc"), &[0; 32], 1, b"x", true);
        assert_eq!(run(&mut slots, &buf[..n]).err(), Some(Skip::UnknownHelper));
        // A short private area from the kernel is zero-extended, not an error.
        let n = queued(&mut buf, Some("ftp"), &[0; 3], 1, b"x", true);
        assert!(run(&mut slots, &buf[..n]).is_ok());
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
        let mut slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued_tftp(&mut buf, b"\x00\x01blob.bin\x00octet\x00");
        let ex = run(&mut slots, &buf[..n]).unwrap();
        assert_eq!(slots[ex.slot].name, "tftp");
        assert_eq!(slots[ex.slot].queue, Config::default().queue_of(1));
        assert_eq!(ex.private_len, 0);
        assert!(!ex.plan.private_changed && !ex.plan.parse_error);
        let exp = ex.plan.expectations.first().expect("an expectation").exp;
        assert_eq!(ex.plan.expectations.len(), 1);
        assert_eq!(exp.src, core::net::IpAddr::from(SERVER));
        assert_eq!(exp.dst, core::net::IpAddr::from(CLIENT));
        assert_eq!((exp.src_port, exp.dst_port), (None, 40000));

        let n = queued_tftp(&mut buf, b"\x00\x01blob.bin\x00oct");
        let ex = run(&mut slots, &buf[..n]).unwrap();
        assert!(ex.plan.parse_error && ex.plan.expectations.is_empty());
    }

    /// A SIP message larger than a TCP reassembly buffer: passed unparsed, flagged for
    /// the log, and counted in the helper's status line (stream_overflows).
    #[test]
    fn a_sip_message_beyond_the_reassembly_budget_is_counted_in_status() {
        use crate::helpers::sip::stream::STREAM_BUF;
        let cfg = Config::parse("config helper 'sip'\n\toption name 'sip'\n", "t").unwrap();
        let mut slots = slots_from_config(&cfg).unwrap();
        assert_eq!(slots[0].status_line().streams.map(|s| s.overflows), Some(0));
        // One segment holding more of an unfinished message than a buffer takes.
        let head = format!(
            "INVITE sip:bob@198.51.100.2 SIP/2.0\r\nCall-ID: big\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\nv=0\r\n{}",
            2 * STREAM_BUF,
            "a=x\r\n".repeat(STREAM_BUF / 5)
        );
        let ip = crate::wire::ipv4::tests::build(
            CLIENT,
            SERVER,
            IPPROTO_TCP,
            &crate::wire::tcp::tests::build(40000, 5060, 1, 0x18, head.as_bytes()),
        );
        let ct = CtFixture {
            tuples: tuples(IPPROTO_TCP, 5060),
            status: status::CONFIRMED | status::SEEN_REPLY,
            helper: Some("sip"),
            info: Some(&[0; 32]),
            ct_info: ctinfo::ESTABLISHED,
        };
        let mut buf = vec![0u8; 2 * STREAM_BUF];
        let n = write_queued(&mut buf, cfg.queue_of(0), &ip, Some(&ct));
        let ex = run(&mut slots, &buf[..n]).unwrap();
        assert!(ex.stream_overflow);
        assert!(ex.plan.expectations.is_empty());
        let line = slots[0].status_line();
        assert_eq!(line.streams.map(|s| s.overflows), Some(1));
        assert!(
            line.counters()
                .to_string()
                .ends_with(" stream_overflows 1 stream_lost 1 unrewritten 0"),
            "{}",
            line.counters()
        );
        // FTP has no stream buffers and no such counters.
        let ftp = slots_from_config(&Config::default()).unwrap();
        assert!(ftp[0].status_line().streams.is_none());
    }

    #[test]
    fn examine_hands_the_configured_policy_to_the_helper() {
        let mut buf = [0u8; 1024];
        let n = queued_forwarded(
            &mut buf,
            b"227 Entering Passive Mode (198,51,100,2,0,22)\r\n",
        );
        let mut slots = slots_from_config(&Config::default()).unwrap();
        let ex = run(&mut slots, &buf[..n]).unwrap();
        assert!(ex.plan.expectations.is_empty());
        assert_eq!(
            ex.plan.refusals.first().map(|r| r.reason),
            Some(crate::helpers::RefusalReason::LowPort)
        );
        let mut cfg = Config::default();
        cfg.helpers[0].allow_low_ports = true;
        let mut slots = slots_from_config(&cfg).unwrap();
        assert!(slots[0].policy.allow_low_ports);
        let ex = run(&mut slots, &buf[..n]).unwrap();
        assert_eq!(
            ex.plan.expectations.first().map(|e| e.exp.dst_port),
            Some(22)
        );
    }

    #[test]
    fn a_second_packet_in_flight_sees_the_first_ones_private_data() {
        // Two reply segments of one connection queued before the first verdict: both
        // carry the same (old) private data. The second starts where the first ended,
        // a line start only the first one's update records.
        let mut slots = slots_from_config(&Config::default()).unwrap();
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
        let first = examine(&mut slots, &mut cache, &pkt, now).unwrap();
        assert!(first.plan.private_changed);
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
        let second = examine(&mut slots, &mut cache, &pkt, now).unwrap();
        assert_eq!(second.plan.expectations.len(), 1);
        assert_eq!(cache.used, 1);
    }

    // ------------------------------------------- expectations deferred past the verdict

    /// A helper that announces a single port and an RTP/RTCP pair for every packet: the
    /// shape of a UDP INVITE, several expectations for a master not yet confirmed.
    struct Media;

    impl crate::helpers::Helper for Media {
        fn analyse(
            &self,
            _pkt: &Packet<'_>,
            ct: &Conntrack,
            _private: &mut [u8],
            _store: &mut crate::helpers::Store,
            _policy: crate::helpers::Policy,
        ) -> Plan {
            let exp = |port| crate::model::Expectation {
                class: 0,
                proto: crate::model::IPPROTO_UDP,
                src: ct.reply.src,
                src_port: None,
                dst: ct.reply.dst,
                dst_port: port,
                flags: 0,
                nat: None,
                helper: None,
            };
            let mut plan = Plan::default();
            plan.expect(exp(6000)).unwrap();
            plan.expect_pair(exp(5004), exp(5005)).unwrap();
            plan
        }
    }

    /// The TFTP slot's registry entry with the `Media` code.
    const MEDIA: crate::helpers::registry::Builtin = crate::helpers::registry::Builtin {
        helper: &Media,
        ..crate::helpers::registry::TFTP
    };

    /// Serve one batch from `queue` (holding queued packets) with `ctl` as the control
    /// socket; returns how many packets were handled.
    fn serve(queue: &dyn Link, ctl: &mut dyn Link, slots: &mut [Slot]) -> usize {
        use crate::daemon::{CTL_BUF, MANGLE_BUF, RX_BUF, TX_BUF};
        let (mut rx, mut tx, mut mangle) = (vec![0; RX_BUF], vec![0; TX_BUF], vec![0; MANGLE_BUF]);
        let (mut ctl_buf, mut ctl_rx) = (vec![0; CTL_BUF], vec![0; CTL_BUF]);
        let (mut verdict_errors, mut unhandled) = (0, 0);
        let mut cache = PrivateCache::new();
        Server {
            queue,
            ctl: Ctl {
                link: ctl,
                buf: &mut ctl_buf,
                rx: &mut ctl_rx,
            },
            rx: &mut rx,
            tx: &mut tx,
            mangle: &mut mangle,
            slots,
            cache: &mut cache,
            recorder: None,
            verdict_errors: &mut verdict_errors,
            unhandled: &mut unhandled,
        }
        .batch(true)
        .unwrap()
    }

    /// A queue socket holding `n` queued first packets of UDP connections, and a control
    /// socket that records, for each expectation it is asked to create, its port and how
    /// many verdict batches the queue socket had sent by then.
    #[allow(clippy::type_complexity)]
    fn sockets(
        n: usize,
    ) -> (
        std::rc::Rc<FakeKernel>,
        FakeKernel,
        std::rc::Rc<std::cell::RefCell<Vec<(u16, usize)>>>,
    ) {
        use crate::daemon::kernel::fake::Reply;
        let queue = std::rc::Rc::new(FakeKernel::acking());
        for _ in 0..n {
            let mut buf = [0u8; 1024];
            let len = queued_tftp(&mut buf, b"\x00\x01blob.bin\x00octet\x00");
            queue.inbox.borrow_mut().push_back(buf[..len].to_vec());
        }
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let (q, log) = (queue.clone(), seen.clone());
        let ctl = FakeKernel::new(move |m| {
            if m.header.nf_msg() == ctnetlink::IPCTNL_MSG_EXP_NEW {
                let t: [Option<crate::netlink::attr::Attr>; 12] =
                    m.nfnl().unwrap().1.table().unwrap();
                let tuple =
                    ctnetlink::parse_tuple(t[usize::from(ctnetlink::CTA_EXPECT_TUPLE)].unwrap());
                log.borrow_mut()
                    .push((tuple.unwrap().dst_port, q.sent.borrow().len()));
            }
            Reply::Ack
        });
        (queue, ctl, seen)
    }

    use crate::daemon::kernel::fake::FakeKernel;

    #[test]
    fn expectations_of_an_unconfirmed_master_are_created_after_the_verdict_is_sent() {
        let mut slots = slots_from_config(&Config::default()).unwrap();
        slots[1].builtin = &MEDIA;
        let (queue, mut ctl, seen) = sockets(1);
        assert_eq!(serve(&*queue, &mut ctl, &mut slots), 1);
        // One verdict, carrying the first expectation (NFQA_EXP).
        let sent = queue.sent.borrow();
        assert_eq!(sent.len(), 1);
        let m = Messages::new(&sent[0]).next().unwrap().unwrap();
        let t: [Option<crate::netlink::attr::Attr>; 16] = m.nfnl().unwrap().1.table().unwrap();
        const NFQA_EXP: usize = 15;
        assert!(t[NFQA_EXP].is_some());
        // The pair over ctnetlink, once the verdict had gone out.
        assert_eq!(*seen.borrow(), [(5004, 1), (5005, 1)]);
        let s = slots[1].stats;
        assert_eq!((s.expectations, s.expectation_errors), (3, 0));
    }

    #[test]
    fn a_full_deferred_list_sends_the_verdicts_early_and_loses_nothing() {
        let mut slots = slots_from_config(&Config::default()).unwrap();
        slots[1].builtin = &MEDIA;
        // Each packet defers two; the list holds DEFERRED_MAX.
        let packets = DEFERRED_MAX / 2 + 8;
        assert!(packets <= BATCH);
        let (queue, mut ctl, seen) = sockets(packets);
        assert_eq!(serve(&*queue, &mut ctl, &mut slots), packets);
        assert_eq!(queue.sent.borrow().len(), 2, "an early send, then the rest");
        let seen = seen.borrow();
        assert_eq!(seen.len(), 2 * packets);
        assert!(seen[..DEFERRED_MAX].iter().all(|&(_, sends)| sends == 1));
        assert!(seen[DEFERRED_MAX..].iter().all(|&(_, sends)| sends == 2));
        let s = slots[1].stats;
        assert_eq!(
            (s.expectations, s.expectation_errors),
            (3 * packets as u64, 0)
        );
    }

    #[test]
    fn a_packet_without_payload_is_passed_without_running_the_helper() {
        let cfg = Config::default();
        let mut slots = slots_from_config(&cfg).unwrap();
        let mut cache = PrivateCache::new();
        let mut buf = [0u8; 1024];
        // A pure ACK of the control connection, with private data the helper would
        // otherwise read.
        let n = queued(&mut buf, Some("ftp"), &[7; 32], 1, b"", true);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        let ftp = slots.iter().position(|s| s.name == "ftp").unwrap();
        assert!(matches!(
            examine(&mut slots, &mut cache, &pkt, Instant::now()),
            Err(Skip::NoPayload(s)) if s == ftp
        ));
        // With a payload it runs.
        let n = queued(&mut buf, Some("ftp"), &[7; 32], 1, b"200 ok\r\n", true);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        assert!(examine(&mut slots, &mut cache, &pkt, Instant::now()).is_ok());
    }

    /// A packet of an expected connection 192.0.2.2:40000 -> 198.51.100.2:`port` (TCP
    /// for ftp, else UDP; status IPS_EXPECTED, confirmed) with helper `helper`, queued
    /// to `queue`.
    fn queued_expected(
        buf: &mut [u8],
        helper: &str,
        queue: u16,
        port: u16,
        payload: &[u8],
    ) -> usize {
        use crate::model::IPPROTO_UDP;
        let (proto, l4) = if helper == "ftp" {
            (
                IPPROTO_TCP,
                crate::wire::tcp::tests::build(40000, port, 1, 0x18, payload),
            )
        } else {
            (
                IPPROTO_UDP,
                crate::wire::udp::tests::build(40000, port, payload),
            )
        };
        let ip = crate::wire::ipv4::tests::build(CLIENT, SERVER, proto, &l4);
        let ct = CtFixture {
            tuples: tuples(proto, port),
            status: status::EXPECTED | status::CONFIRMED | status::SEEN_REPLY,
            helper: Some(helper),
            info: Some(&[0; 32]),
            ct_info: ctinfo::ESTABLISHED,
        };
        write_queued(buf, queue, &ip, Some(&ct))
    }

    /// Kernels that give expected connections their master's helper (issue #15) queue
    /// every FTP/TFTP data packet and every RTP packet of a SIP call: each is accepted
    /// at once, unparsed, and counted as the helper's expected_passed, not as its
    /// packets. A registration's incoming call (SIP on an expected connection) is still
    /// analysed: its INVITE opens the media.
    #[test]
    fn packets_of_expected_connections_are_accepted_at_once_unless_sip() {
        let cfg = Config::default();
        let mut slots = slots_from_config(&cfg).unwrap();
        let queue = FakeKernel::acking();
        let push = |helper: &str, q: u16, port: u16, payload: &[u8]| {
            let mut buf = [0u8; 2048];
            let n = queued_expected(&mut buf, helper, q, port, payload);
            queue.inbox.borrow_mut().push_back(buf[..n].to_vec());
        };
        push("ftp", cfg.queue_of(0), 40001, b"data");
        push("tftp", cfg.queue_of(1), 40002, b"\x00\x03\x00\x01data");
        push(
            "sip",
            cfg.queue_of(2),
            40010,
            &[0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0],
        );
        let sdp = "v=0\r\nc=IN IP4 192.0.2.2\r\nm=audio 40100 RTP/AVP 0\r\n";
        let invite = format!(
            "INVITE sip:bob@198.51.100.2:40020 SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        push("sip", cfg.queue_of(2), 40020, invite.as_bytes());
        let mut ctl = FakeKernel::acking();
        assert_eq!(serve(&queue, &mut ctl, &mut slots), 4);
        let sent = queue.sent.borrow();
        let verdicts: Vec<_> = sent
            .iter()
            .flat_map(|b| {
                Messages::new(b)
                    .map(|m| m.unwrap().payload.to_vec())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(verdicts.len(), 4, "every packet got its verdict");
        let (ftp, tftp, sip) = (slots[0].stats, slots[1].stats, slots[2].stats);
        assert_eq!((ftp.packets, ftp.expected_passed), (0, 1));
        assert_eq!((tftp.packets, tftp.expected_passed), (0, 1));
        assert_eq!(
            (sip.packets, sip.expected_passed),
            (1, 1),
            "the INVITE was analysed"
        );
        assert_eq!(sip.expectations, 2, "its RTP/RTCP pair");
        assert!(
            slots[2]
                .status_line()
                .counters()
                .to_string()
                .contains(" expected_passed 1 ")
        );
    }
}
