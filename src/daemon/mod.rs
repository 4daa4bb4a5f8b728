//! The daemon: registers the helpers, binds their queues and serves packets in a
//! single-threaded poll loop. All kernel I/O lives here, behind the small
//! [`Link`](crate::netlink::socket::Link) seam that tests fill with a scripted kernel.
//!
//! - `slots`: the configured helpers as the daemon runs them, with their counters
//! - `lifecycle`: start, registration, reload, stop and drain
//! - `serve`: reading queued packets, `examine` (pure), verdict batching, expectations
//!   deferred until the verdicts are sent
//! - `effects`: what a helper's plan means for the kernel: expectations (deletion, port
//!   search for single ports and RTP/RTCP pairs, refresh, withdrawal), NAT rewrites,
//!   sequence adjustment
//! - `kernel`: request/answer plumbing on the netlink sockets

mod effects;
mod kernel;
mod lifecycle;
mod losses;
mod owners;
mod serve;
mod slots;
#[cfg(test)]
mod test_fixtures;

use std::os::fd::AsFd;

use log::{error, info};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::Config;
use crate::firewall;
use crate::lazy_buf::LazyBuf;
use crate::model::Family;
use crate::netlink::queue;
use crate::netlink::socket::{IoError, Socket};
use crate::private_cache::PrivateCache;
use crate::status;

use lifecycle::handled_signals;
pub use lifecycle::{block_signals, unblock_signals};
pub use serve::{Examined, PacketPath, Skip, examine};
pub use slots::{LogLimit, Slot, Stats, slots_from_config};

/// Receive buffer: a whole 64 KiB packet plus netlink and conntrack attributes.
pub(super) const RX_BUF: usize = 0x10000 + 4096;
/// Verdicts of one batch, each with private data and possibly an expectation; room for
/// the largest one, a whole rewritten packet (see MANGLE_BUF).
pub(super) const TX_BUF: usize = MANGLE_BUF + queue::VERDICT_OVERHEAD_MAX;
/// Requests and their answers on the control socket.
pub(super) const CTL_BUF: usize = 16 * 1024;
/// How long a stop or reload keeps answering packets that were queued before the
/// helpers were switched off.
pub(super) const DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(500);
/// Room for a packet whose announcements are rewritten (NAT): the most a netlink
/// attribute carries (its length is 16 bits, header included), which is also the most
/// the kernel copies to us (NFQNL_MAX_COPY_RANGE). Queues of TCP helpers take GSO
/// packets whole, so a control segment can come merged with what followed it, up to
/// that size.
pub(super) const MANGLE_BUF: usize = 0xffff - crate::netlink::attr::NLA_HDRLEN;
// The largest verdict (a whole mangled packet and every attribute) fits an empty batch.
const _: () = assert!(MANGLE_BUF + queue::VERDICT_OVERHEAD_MAX <= TX_BUF);
/// Packets handled before verdicts are flushed and signals looked at again.
pub(super) const BATCH: usize = 64;
/// Kernel socket buffer for the queue, so bursts wait in the kernel, not on the wire.
pub(super) const QUEUE_RCVBUF: usize = 4 << 20;

/// When main() began, for reporting how long start-up took.
pub static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// The three packet buffers in one mapping (`packet_parts`): the queue's receive buffer,
/// the verdict batch and the NAT rewrite buffer. Like every large buffer of the daemon it
/// becomes resident only where packets write it (`crate::lazy_buf`).
pub(super) const PACKET_BUFS: usize = RX_BUF + TX_BUF + MANGLE_BUF;

/// The queue's receive buffer, the verdict batch and the NAT rewrite buffer, out of
/// `Buffers::packet`.
pub(super) fn packet_parts(packet: &mut [u8]) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (rx, rest) = packet.split_at_mut(RX_BUF.min(packet.len()));
    let (tx, mangle) = rest.split_at_mut(TX_BUF.min(rest.len()));
    (rx, tx, mangle)
}

/// Fixed buffers, allocated once at start.
pub(super) struct Buffers {
    /// rx, tx and mangle (see PACKET_BUFS).
    packet: LazyBuf,
    ctl: LazyBuf,
    ctl_rx: LazyBuf,
    /// The status report and the /proc text it includes.
    report: Box<[u8]>,
    proc_queues: Box<[u8]>,
}

/// How the daemon was started, besides its configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// The file SIGHUP re-reads (None: the default path, defaults if missing).
    pub config_path: Option<std::path::PathBuf>,
    /// The status socket (None: no status socket).
    pub control_socket: Option<std::path::PathBuf>,
    /// A log level was given on the command line: the file's does not apply.
    pub cli_log_level: bool,
    /// The nft program for the firewall wiring.
    pub nft: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config_path: None,
            control_socket: None,
            cli_log_level: false,
            nft: firewall::NFT.into(),
        }
    }
}

pub struct Daemon {
    queue_sock: Socket,
    ctl_sock: Socket,
    slots: heapless::Vec<Slot, { crate::config::MAX_HELPERS }>,
    cfg: Config,
    bufs: Buffers,
    opts: Options,
    control: Option<status::Server>,
    verdict_errors: u64,
    unhandled: u64,
    /// The private data last written per conntrack (several packets in flight).
    private_cache: PrivateCache,
    recorder: Option<Recorder>,
    /// Queue wakeups so far, and whether the last one found a burst (see `run`).
    wakeups: u32,
    greedy_reads: bool,
    /// The start's `nft -f -`, while it runs: the queues are served meanwhile (after a
    /// crash the old table is still in place and packets already wait).
    firewall_pending: Option<crate::firewall::Pending>,
    /// Milliseconds from process start to the helpers' registration.
    registered_ms: Option<u128>,
    /// The kernel's loss counters of our queues when last read, and when (losses.rs).
    losses: losses::Losses,
    losses_checked: Option<std::time::Instant>,
}

/// Writes the first datagrams received from the queue to a file (each preceded by
/// its length as a little-endian u32), to build decoder tests from real kernel
/// output. Off unless asked for on the command line.
pub struct Recorder {
    file: std::fs::File,
    left: usize,
}

impl Recorder {
    pub fn create(path: &std::path::Path, limit: usize) -> std::io::Result<Recorder> {
        Ok(Recorder {
            file: std::fs::File::create(path)?,
            left: limit,
        })
    }

    pub(super) fn record(&mut self, datagram: &[u8]) {
        use std::io::Write;
        if self.left == 0 {
            return;
        }
        self.left -= 1;
        let len = (datagram.len() as u32).to_le_bytes();
        if self
            .file
            .write_all(&len)
            .and_then(|()| self.file.write_all(datagram))
            .is_err()
        {
            self.left = 0;
        }
    }
}

/// A startup failure, with the context a log line needs.
#[derive(Debug)]
pub struct StartError {
    pub what: String,
    pub cause: Option<Box<IoError>>,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{}: {}", self.what, cause),
            None => write!(f, "{}", self.what),
        }
    }
}

pub(super) fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

impl Daemon {
    pub fn set_recorder(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// Write the status report for the control socket into the report buffer.
    pub(super) fn status_report(&mut self) -> usize {
        let mut lines: heapless::Vec<status::HelperLine<'_>, { crate::config::MAX_HELPERS }> =
            heapless::Vec::new();
        for s in &self.slots {
            let _ = lines.push(s.status_line());
        }
        let globals = status::Globals {
            verdict_errors: self.verdict_errors,
            passed_without_helper: self.unhandled,
            private_cache_used: self.private_cache.used,
            private_cache_evictions: self.private_cache.evictions,
        };
        let proc_text = status::read_proc_queues(&mut self.bufs.proc_queues);
        status::report(&mut self.bufs.report, &lines, &globals, proc_text)
    }

    /// Serve until SIGTERM or SIGINT. Returns the process exit code.
    pub fn run(mut self) -> i32 {
        let mask = handled_signals();
        if let Err(e) = mask.thread_block() {
            error!("cannot block signals: {e}");
            return 1;
        }
        let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        {
            Ok(s) => s,
            Err(e) => {
                error!("cannot create signalfd: {e}");
                return 1;
            }
        };
        loop {
            let (queue_ready, signal_ready, control_ready, firewall_ready) = {
                // The status socket and a running nft, when there are, are polled
                // too; without them their entries watch the signal fd again
                // (harmless).
                let control_fd = match &self.control {
                    Some(c) => c.listener().as_fd(),
                    None => sfd.as_fd(),
                };
                let nft_fd = self
                    .firewall_pending
                    .as_ref()
                    .and_then(|p| p.fd())
                    .unwrap_or(sfd.as_fd());
                let mut fds = [
                    PollFd::new(self.queue_sock.as_fd(), PollFlags::POLLIN),
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(control_fd, PollFlags::POLLIN),
                    PollFd::new(nft_fd, PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        error!("poll failed: {e}");
                        self.stop();
                        return 1;
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (
                    ready(&fds[0]),
                    ready(&fds[1]),
                    self.control.is_some() && ready(&fds[2]),
                    self.firewall_pending.is_some() && ready(&fds[3]),
                )
            };
            if firewall_ready && let Err(e) = self.firewall_loaded() {
                // As a failed start: without the table the helpers would sit unused.
                error!("{e}");
                self.disable_helpers();
                self.drain();
                self.control = None;
                return 1;
            }
            if control_ready {
                let len = self.status_report();
                if let Some(c) = &self.control {
                    c.serve(&self.bufs.report[..len]);
                }
            }
            if queue_ready {
                // Reading on until the socket is empty costs one extra (empty) recv
                // per wakeup, which a lone packet does not repay. Read greedily
                // while bursts come (the last wakeup found more than one packet),
                // and look for a burst every eighth wakeup.
                self.wakeups = self.wakeups.wrapping_add(1);
                let greedy = self.greedy_reads || self.wakeups.is_multiple_of(8);
                match self.serve_batch(greedy) {
                    Ok(n) => {
                        self.greedy_reads = n > 1;
                        self.watch_losses(std::time::Instant::now());
                    }
                    Err(e) => {
                        error!("queue socket failed: {e}");
                        self.stop();
                        return 1;
                    }
                }
            }
            if signal_ready {
                while let Ok(Some(info)) = sfd.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                            info!("stopping on signal {}", info.ssi_signo);
                            self.stop();
                            return 0;
                        }
                        Ok(Signal::SIGUSR1) => self.log_stats(),
                        Ok(Signal::SIGHUP) => self.reload(),
                        _ => {}
                    }
                }
            }
        }
    }

    pub(super) fn log_stats(&self) {
        for s in &self.slots {
            info!("{}: {}", s.name, s.status_line().counters());
        }
        info!(
            "verdict errors {} packets passed without a helper {} private data from the cache {} cache evictions {}",
            self.verdict_errors,
            self.unhandled,
            self.private_cache.used,
            self.private_cache.evictions
        );
    }
}
