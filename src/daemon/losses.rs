//! Packets the kernel could not queue to us. They never reach the socket, so the
//! daemon learns of them only from /proc/net/netfilter/nfnetlink_queue: `queue_dropped`
//! (the queue held `queue_maxlen` packets) and `queue_user_dropped` (the socket's
//! receive buffer was full; the socket is set not to report that as ENOBUFS, which
//! would only tell us that something, not what, was lost). With `fail_open` the kernel
//! accepts such packets unhelped and counts nothing. Looked at no more than once per
//! [`CHECK_EVERY`] while packets arrive; a rise is logged with what to change.

use log::warn;

use super::Daemon;
use crate::status::parse_proc_line;

/// How often, at most, the /proc counters are read (only on wakeups for packets).
pub(super) const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The kernel's loss counters of the queues bound by socket `portid`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Dropped because the queue was full (`queue_maxlen`).
    pub queue_full: u64,
    /// Dropped because the socket's receive buffer was full.
    pub socket_full: u64,
}

/// Sum the counters of the queues of /proc/net/netfilter/nfnetlink_queue's `text`
/// bound by `portid`.
pub fn losses_of(text: &str, portid: u32) -> Losses {
    let mut sum = Losses::default();
    for q in text.lines().filter_map(parse_proc_line) {
        if q.portid == portid {
            sum.queue_full = sum.queue_full.saturating_add(q.dropped);
            sum.socket_full = sum.socket_full.saturating_add(q.user_dropped);
        }
    }
    sum
}

/// Losses since `before`: what to log, if anything.
pub fn new_losses(before: Losses, now: Losses) -> Option<Losses> {
    let rise = Losses {
        queue_full: now.queue_full.saturating_sub(before.queue_full),
        socket_full: now.socket_full.saturating_sub(before.socket_full),
    };
    (rise != Losses::default()).then_some(rise)
}

impl Daemon {
    /// Read the kernel's loss counters if [`CHECK_EVERY`] has passed since the last
    /// look, and log a rise.
    pub(super) fn watch_losses(&mut self, now: std::time::Instant) {
        if self
            .losses_checked
            .is_some_and(|at| now.duration_since(at) < CHECK_EVERY)
        {
            return;
        }
        self.losses_checked = Some(now);
        let Some(text) = crate::status::read_proc_queues(&mut self.bufs.proc_queues) else {
            return;
        };
        let seen = losses_of(text, self.queue_sock.portid());
        if let Some(rise) = new_losses(self.losses, seen) {
            warn!(
                "the kernel could not queue {} packets to us since the last look ({} with \
                 the queue full: raise queue_maxlen; {} with the socket buffer full: a burst \
                 larger than it, or the daemon short of CPU); they were dropped, and their connections \
                 retransmit. With fail_open on they would pass unhelped instead",
                rise.queue_full + rise.socket_full,
                rise.queue_full,
                rise.socket_full
            );
        }
        self.losses = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "48000   4242     3 2 65531    10     2      900  1\n\
                        48001   4242     0 2 65531     1     0       40  1\n\
                        48002   9999     0 2 65531   500   500       40  1\n";

    #[test]
    fn only_our_queues_count() {
        assert_eq!(
            losses_of(PROC, 4242),
            Losses {
                queue_full: 11,
                socket_full: 2
            }
        );
        assert_eq!(losses_of(PROC, 1), Losses::default());
        assert_eq!(losses_of("garbage\n", 4242), Losses::default());
    }

    #[test]
    fn only_a_rise_is_reported() {
        let a = Losses {
            queue_full: 11,
            socket_full: 2,
        };
        assert_eq!(new_losses(a, a), None);
        assert_eq!(
            new_losses(
                a,
                Losses {
                    queue_full: 11,
                    socket_full: 7
                }
            ),
            Some(Losses {
                queue_full: 0,
                socket_full: 5
            })
        );
        // Counters that went back (a queue bound afresh on reload) are no loss.
        assert_eq!(new_losses(a, Losses::default()), None);
    }
}
