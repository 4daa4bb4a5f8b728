//! Requests and answers on the netlink sockets, over the [`Link`] seam: the control
//! socket's ACKed requests (`Ctl`), queue configuration that answers packets arriving
//! meanwhile, and verdict batching that never loses a verdict to size.

use log::{error, warn};

use crate::netlink::attr::Writer;
use crate::netlink::msg::NLM_F_ACK;
use crate::netlink::queue;
use crate::netlink::socket::{IoError, Link};

/// A plain verdict for a packet queued while a queue is being configured.
pub(super) const STRAY_VERDICT_BUF: usize = 64;

/// Append a verdict to the batch in `tx[..tx_len]`, flushing the batch first when it is
/// full; returns the new batch length. A verdict always fits an empty batch (TX_BUF is
/// sized for the largest one, checked at compile time), so none is ever lost to size.
pub(super) fn push_verdict(
    link: &dyn Link,
    tx: &mut [u8],
    tx_len: usize,
    v: &queue::Verdict<'_>,
) -> Result<usize, IoError> {
    let seq = 0; // verdicts ask for no ACK; errors come back with this sequence number
    let mut w = Writer::new(&mut tx[tx_len..]);
    if queue::write_verdict(&mut w, seq, v).is_ok() {
        return Ok(tx_len + w.len());
    }
    if tx_len > 0 {
        link.send(&tx[..tx_len])?;
    }
    let mut w = Writer::new(tx);
    if queue::write_verdict(&mut w, seq, v).is_ok() {
        return Ok(w.len());
    }
    // Unreachable by construction (see MANGLE_BUF); never leave the packet unanswered.
    error!(
        "verdict for packet {} does not fit; accepting it unchanged",
        v.id
    );
    let mut w = Writer::new(tx);
    queue::write_verdict(
        &mut w,
        seq,
        &queue::Verdict::plain(v.queue, v.id, v.verdict),
    )?;
    Ok(w.len())
}

/// The verdicts of one batch as they are written into the send buffer. A run of plain
/// accepts of one queue is held back and written as one NFQNL_MSG_VERDICT_BATCH (one
/// message for the kernel to parse instead of one per packet). A verdict that carries
/// more closes the run first, so the kernel, which takes the messages of a send in
/// order, has answered every packet before it by the time the batch verdict (which
/// takes every packet still waiting up to its id) arrives.
pub(super) struct Verdicts<'a> {
    link: &'a dyn Link,
    tx: &'a mut [u8],
    len: usize,
    run: Option<AcceptRun>,
}

/// Plain accepts not written yet: packets of `queue` up to `last_id`, `count` of them.
#[derive(Clone, Copy, Debug)]
struct AcceptRun {
    queue: u16,
    last_id: u32,
    count: u32,
}

impl<'a> Verdicts<'a> {
    pub(super) fn new(link: &'a dyn Link, tx: &'a mut [u8]) -> Verdicts<'a> {
        Verdicts {
            link,
            tx,
            len: 0,
            run: None,
        }
    }

    /// Add the verdict of the next packet received.
    pub(super) fn push(&mut self, v: &queue::Verdict<'_>) -> Result<(), IoError> {
        if v.is_plain_pass() {
            match &mut self.run {
                Some(run) if run.queue == v.queue => {
                    run.last_id = v.id;
                    run.count += 1;
                }
                _ => {
                    self.close_run()?;
                    self.run = Some(AcceptRun {
                        queue: v.queue,
                        last_id: v.id,
                        count: 1,
                    });
                }
            }
            return Ok(());
        }
        self.close_run()?;
        self.len = push_verdict(self.link, self.tx, self.len, v)?;
        Ok(())
    }

    /// Send every verdict so far (before creating expectations that wait for them).
    pub(super) fn send(&mut self) -> Result<(), IoError> {
        self.close_run()?;
        if self.len > 0 {
            self.link.send(&self.tx[..self.len])?;
            self.len = 0;
        }
        Ok(())
    }

    fn close_run(&mut self) -> Result<(), IoError> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        if run.count == 1 {
            let v = queue::Verdict::plain(run.queue, run.last_id, queue::PASS);
            self.len = push_verdict(self.link, self.tx, self.len, &v)?;
            return Ok(());
        }
        let write = |tx: &mut [u8]| {
            let mut w = Writer::new(tx);
            queue::write_verdict_batch(&mut w, 0, run.queue, run.last_id, queue::PASS)
                .map(|()| w.len())
        };
        if let Ok(n) = write(&mut self.tx[self.len..]) {
            self.len += n;
            return Ok(());
        }
        self.link.send(&self.tx[..self.len])?;
        // An empty buffer holds far more than one batch verdict.
        self.len = write(self.tx)?;
        Ok(())
    }
}

/// Answer a packet queued while the queue socket waits for the kernel's answer to a
/// configuration request (binding a further queue at start or reload): it gets an accept
/// at once, unhelped, because a packet without a verdict stays held in the kernel.
/// Returns whether `msg` was such a packet.
pub(super) fn accept_stray(link: &dyn Link, msg: &crate::netlink::msg::Message<'_>) -> bool {
    let Some((queue, id)) = queue::packet_ref(msg) else {
        return false;
    };
    let mut buf = [0u8; STRAY_VERDICT_BUF];
    let mut w = Writer::new(&mut buf);
    let sent = queue::write_verdict(&mut w, 0, &queue::Verdict::plain(queue, id, queue::PASS))
        .map_err(IoError::from)
        .and_then(|()| link.send(w.as_slice()));
    if let Err(e) = sent {
        warn!("cannot answer packet {id} queued during a queue configuration: {e}");
    }
    true
}

/// Send a configuration request on the queue socket and wait for its ACK, answering any
/// packet queued meanwhile ([`accept_stray`]). Returns the request's outcome and how many
/// packets were answered.
pub(super) fn queue_transact(
    sock: &mut dyn Link,
    req: &mut [u8],
    rx: &mut [u8],
    build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
) -> (Result<(), IoError>, u64) {
    let seq = sock.next_seq();
    let mut w = Writer::new(req);
    if let Err(e) = build(&mut w, seq) {
        return (Err(e.into()), 0);
    }
    let len = w.len();
    let link: &dyn Link = sock;
    let mut strays = 0;
    let result = crate::netlink::socket::transact(link, &req[..len], seq, rx, &mut |msg| {
        if accept_stray(link, msg) {
            strays += 1;
        }
    });
    (result, strays)
}

/// The control socket and its buffers, borrowed apart from the rest of the daemon so the
/// packet path can use them while a helper slot is borrowed too. Tests put a scripted
/// kernel behind `link`.
pub(super) struct Ctl<'a> {
    pub(super) link: &'a mut dyn Link,
    pub(super) buf: &'a mut [u8],
    pub(super) rx: &'a mut [u8],
}

impl Ctl<'_> {
    /// Send one request built by `build` (given the sequence number) and wait for its
    /// ACK; `on_reply` sees any other message answering it.
    pub(super) fn request(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
        mut on_reply: impl FnMut(&crate::netlink::msg::Message<'_>),
    ) -> Result<(), IoError> {
        let seq = self.link.next_seq();
        let mut w = Writer::new(self.buf);
        build(&mut w, seq)?;
        let len = w.len();
        crate::netlink::socket::transact(&*self.link, &self.buf[..len], seq, self.rx, &mut on_reply)
    }

    /// Send `n` requests (at most [`MAX_BATCH`]), built by `build(writer, i, seq)`, in one
    /// datagram and wait for all their ACKs: one send and a few receives instead of a
    /// round trip each. `on_reply(i, msg)` sees any other message answering request i.
    /// Returns each request's outcome in order (all the same error if the exchange
    /// itself failed).
    pub(super) fn requests(
        &mut self,
        n: usize,
        mut build: impl FnMut(&mut Writer<'_>, usize, u32) -> crate::netlink::Result<()>,
        mut on_reply: impl FnMut(usize, &crate::netlink::msg::Message<'_>),
    ) -> Outcomes {
        let n = n.min(MAX_BATCH);
        let mut outcomes: heapless::Vec<Option<Result<(), IoError>>, MAX_BATCH> =
            heapless::Vec::new();
        let mut w = Writer::new(self.buf);
        let mut first = None;
        let mut failed = None;
        let mut starts = [0usize; MAX_BATCH];
        for (i, start) in starts.iter_mut().enumerate().take(n) {
            let seq = self.link.next_seq();
            first.get_or_insert(seq);
            *start = w.len();
            if let Err(e) = build(&mut w, i, seq) {
                failed = Some(IoError::from(e));
                break;
            }
            let _ = outcomes.push(None);
        }
        let len = w.len();
        // Only the last request asks for an ACK (see transact_many): the others are
        // answered only if they fail. nlmsg_flags is the u16 at offset 6 of a message.
        for &start in starts.iter().take(outcomes.len().saturating_sub(1)) {
            if let Some(f) = self.buf.get_mut(start + 6..start + 8) {
                let flags = u16::from_ne_bytes([f[0], f[1]]) & !NLM_F_ACK;
                f.copy_from_slice(&flags.to_ne_bytes());
            }
        }
        let result = match (failed, first) {
            (Some(e), _) => Err(e),
            (None, None) => Ok(()),
            (None, Some(first)) => crate::netlink::socket::transact_many(
                &*self.link,
                &self.buf[..len],
                first,
                self.rx,
                &mut outcomes,
                &mut on_reply,
            ),
        };
        let mut out = Outcomes::new();
        for i in 0..n {
            let r = match (&result, outcomes.get_mut(i).and_then(Option::take)) {
                (_, Some(r)) => r,
                (Err(e), None) => Err(e.clone()),
                (Ok(()), None) => Err(IoError::Protocol(crate::netlink::Error::Truncated)),
            };
            let _ = out.push(r);
        }
        out
    }
}

/// Most requests one [`Ctl::requests`] batch sends: a packet's expectations or
/// deletions.
pub(super) const MAX_BATCH: usize = crate::helpers::MAX_EXPECTATIONS_PER_PACKET;
/// The outcome of each request of a batch.
pub(super) type Outcomes = heapless::Vec<Result<(), IoError>, MAX_BATCH>;

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted kernel behind a [`Link`], for tests of everything that talks to it.
    use super::*;
    use crate::netlink::msg::Messages;
    use nix::errno::Errno;

    use crate::netlink::msg::{Header, NLM_F_ACK, NLMSG_ERROR, NLMSG_HDRLEN};
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// How the fake kernel answers one request.
    pub(crate) enum Reply {
        Ack,
        Errno(Errno),
        /// These messages (built by the closure with the request's seq), then the ACK.
        Then(Vec<u8>),
    }

    /// Records every request and answers those that ask for an ACK through `script`;
    /// `recv` hands out what is waiting, and times out (as SO_RCVTIMEO) when nothing is.
    pub(crate) struct FakeKernel {
        pub(crate) seq: u32,
        pub(crate) inbox: RefCell<VecDeque<Vec<u8>>>,
        pub(crate) sent: RefCell<Vec<Vec<u8>>>,
        #[allow(clippy::type_complexity)]
        pub(crate) script: RefCell<Box<dyn FnMut(&crate::netlink::msg::Message<'_>) -> Reply>>,
    }

    impl FakeKernel {
        pub(crate) fn new(
            script: impl FnMut(&crate::netlink::msg::Message<'_>) -> Reply + 'static,
        ) -> Self {
            FakeKernel {
                seq: 100,
                inbox: RefCell::new(VecDeque::new()),
                sent: RefCell::new(Vec::new()),
                script: RefCell::new(Box::new(script)),
            }
        }

        pub(crate) fn acking() -> Self {
            Self::new(|_| Reply::Ack)
        }

        /// The (nfnetlink subsystem, message) types of the requests sent so far.
        pub(crate) fn kinds(&self) -> Vec<(u8, u8)> {
            self.sent
                .borrow()
                .iter()
                .flat_map(|d| {
                    Messages::new(d)
                        .map(|m| {
                            let m = m.unwrap();
                            (m.header.subsys(), m.header.nf_msg())
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }

    /// NLMSG_ERROR answering `req` (errno 0: an ACK), with the capped echo.
    pub(crate) fn ack_for(req: &Header, errno: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLMSG_HDRLEN * 2 + 4) as u32).to_ne_bytes());
        v.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        v.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
        v.extend_from_slice(&req.seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(-errno).to_ne_bytes());
        v.extend_from_slice(&req.len.to_ne_bytes());
        v.extend_from_slice(&req.kind.to_ne_bytes());
        v.extend_from_slice(&req.flags.to_ne_bytes());
        v.extend_from_slice(&req.seq.to_ne_bytes());
        v.extend_from_slice(&req.pid.to_ne_bytes());
        v
    }

    impl Link for FakeKernel {
        fn next_seq(&mut self) -> u32 {
            self.seq += 1;
            self.seq
        }

        fn send(&self, bytes: &[u8]) -> Result<(), IoError> {
            self.sent.borrow_mut().push(bytes.to_vec());
            for msg in Messages::new(bytes) {
                let msg = msg.unwrap();
                // As netlink_rcv_skb: a request is answered by an ACK only when it asks
                // for one, by an error always; a GET's reply comes either way.
                let acked = msg.header.flags & NLM_F_ACK != 0;
                let reply = (self.script.borrow_mut())(&msg);
                let mut inbox = self.inbox.borrow_mut();
                match reply {
                    Reply::Ack if acked => inbox.push_back(ack_for(&msg.header, 0)),
                    Reply::Ack => {}
                    Reply::Errno(e) => inbox.push_back(ack_for(&msg.header, e as i32)),
                    Reply::Then(m) => {
                        inbox.push_back(m);
                        if acked {
                            inbox.push_back(ack_for(&msg.header, 0));
                        }
                    }
                }
            }
            Ok(())
        }

        fn recv<'b>(
            &self,
            buf: &'b mut [u8],
            nonblocking: bool,
        ) -> Result<Option<&'b [u8]>, IoError> {
            match self.inbox.borrow_mut().pop_front() {
                Some(d) => {
                    buf[..d.len()].copy_from_slice(&d);
                    Ok(Some(&buf[..d.len()]))
                }
                None if nonblocking => Ok(None),
                None => Err(IoError::Timeout),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use crate::daemon::test_fixtures::*;
    use crate::daemon::{CTL_BUF, MANGLE_BUF, RX_BUF, TX_BUF};
    use crate::netlink::msg::Messages;

    #[test]
    fn a_packet_queued_during_a_queue_configuration_gets_a_verdict() {
        let mut kernel = FakeKernel::acking();
        // A packet of an already bound queue is waiting before the ACK.
        let mut pkt = [0u8; 1024];
        let n = queued(&mut pkt, Some("ftp"), &[0; 32], 1, b"x", true);
        kernel.inbox.borrow_mut().push_back(pkt[..n].to_vec());
        let mut req = vec![0u8; CTL_BUF];
        let mut rx = vec![0u8; RX_BUF];
        let (result, strays) = queue_transact(&mut kernel, &mut req, &mut rx, |w, seq| {
            queue::write_unbind(w, seq, 5)
        });
        assert_eq!(result, Ok(()));
        assert_eq!(strays, 1);
        let sent = kernel.sent.borrow();
        assert_eq!(sent.len(), 2, "the request and one verdict");
        let v = Messages::new(&sent[1]).next().unwrap().unwrap();
        assert_eq!(v.header.nf_msg(), queue::NFQNL_MSG_VERDICT);
        let t: [Option<crate::netlink::attr::Attr>; 4] = v.nfnl().unwrap().1.table().unwrap();
        // verdict PASS (NF_STOP), id 9 (the fixture's packet id)
        assert_eq!(t[2].unwrap().payload, &[0, 0, 0, 5, 0, 0, 0, 9]);
    }

    /// (message type, queue, verdict, id) of each message of `datagram`.
    fn verdicts_in(datagram: &[u8]) -> Vec<(u8, u16, u32, u32)> {
        Messages::new(datagram)
            .map(|m| {
                let m = m.unwrap();
                let (g, attrs) = m.nfnl().unwrap();
                let t: [Option<crate::netlink::attr::Attr>; 3] = attrs.table().unwrap();
                let h = t[2].unwrap().payload;
                let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                (m.header.nf_msg(), g.res_id, be(&h[..4]), be(&h[4..8]))
            })
            .collect()
    }

    #[test]
    fn runs_of_plain_accepts_go_out_as_one_batch_verdict_each_in_order() {
        use queue::{NF_DROP, NFQNL_MSG_VERDICT as ONE, NFQNL_MSG_VERDICT_BATCH as RUN, PASS};
        let kernel = FakeKernel::acking();
        let mut tx = vec![0u8; TX_BUF];
        let mut v = Verdicts::new(&kernel, &mut tx);
        let plain = |q, id| queue::Verdict::plain(q, id, PASS);
        for id in 1..=3 {
            v.push(&plain(7, id)).unwrap();
        }
        // One with private data: the run before it is written first.
        let help = queue::Verdict {
            help: Some(queue::HelpUpdate {
                helper_name: "ftp",
                info: &[1; 4],
            }),
            ..plain(7, 4)
        };
        v.push(&help).unwrap();
        v.push(&plain(7, 5)).unwrap();
        // Another queue ends a run; a drop is never merged.
        v.push(&plain(8, 6)).unwrap();
        v.push(&plain(8, 7)).unwrap();
        v.push(&queue::Verdict::plain(8, 8, NF_DROP)).unwrap();
        v.push(&plain(7, 9)).unwrap();
        assert!(
            kernel.sent.borrow().is_empty(),
            "nothing is sent before `send`"
        );
        v.send().unwrap();
        v.send().unwrap();
        let sent = kernel.sent.borrow();
        assert_eq!(
            sent.len(),
            1,
            "one datagram, and nothing more for a second send"
        );
        assert_eq!(
            verdicts_in(&sent[0]),
            [
                (RUN, 7, PASS, 3),
                (ONE, 7, PASS, 4),
                (ONE, 7, PASS, 5),
                (RUN, 8, PASS, 7),
                (ONE, 8, NF_DROP, 8),
                (ONE, 7, PASS, 9),
            ]
        );
    }

    #[test]
    fn a_run_that_does_not_fit_flushes_what_came_before_it() {
        let kernel = FakeKernel::acking();
        let mut tx = vec![0u8; TX_BUF];
        // Fill the buffer with a verdict carrying a rewritten packet, leaving less room
        // than a batch verdict needs.
        let packet = vec![0x45u8; MANGLE_BUF];
        let big = queue::Verdict {
            payload: Some(&packet),
            ..queue::Verdict::plain(3, 1, queue::PASS)
        };
        let mut v = Verdicts::new(&kernel, &mut tx);
        v.push(&big).unwrap();
        v.push(&queue::Verdict::plain(3, 2, queue::PASS)).unwrap();
        v.push(&queue::Verdict::plain(3, 3, queue::PASS)).unwrap();
        v.send().unwrap();
        let sent = kernel.sent.borrow();
        let all: Vec<_> = sent.iter().flat_map(|d| verdicts_in(d)).collect();
        assert_eq!(
            all.iter().map(|m| (m.0, m.3)).collect::<Vec<_>>(),
            [
                (queue::NFQNL_MSG_VERDICT, 1),
                (queue::NFQNL_MSG_VERDICT_BATCH, 3)
            ],
            "the rewritten packet's verdict first, then the run, over {} sends",
            sent.len()
        );
    }

    #[test]
    fn the_largest_verdict_goes_out_even_behind_a_full_batch() {
        let kernel = FakeKernel::acking();
        let mut tx = vec![0u8; TX_BUF];
        let packet = vec![0x45u8; MANGLE_BUF];
        // A batch that already holds a verdict with a rewritten packet.
        let small = vec![0x45u8; 2000];
        let earlier = queue::Verdict {
            payload: Some(&small),
            ..queue::Verdict::plain(0, 1, 1)
        };
        let tx_len = push_verdict(&kernel, &mut tx, 0, &earlier).unwrap();
        assert_eq!(kernel.sent.borrow().len(), 0);
        let big = queue::Verdict {
            payload: Some(&packet),
            seq_adjust: true,
            ..queue::Verdict::plain(0, 2, 1)
        };
        let tx_len = push_verdict(&kernel, &mut tx, tx_len, &big).unwrap();
        assert_eq!(
            kernel.sent.borrow().len(),
            1,
            "the earlier batch was flushed"
        );
        let m = Messages::new(&tx[..tx_len]).next().unwrap().unwrap();
        assert_eq!(queue::packet_ref(&m), None, "a verdict, not a packet");
        assert!(tx_len > MANGLE_BUF);
    }
}
