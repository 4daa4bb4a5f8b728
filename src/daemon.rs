//! The daemon: registers the helpers, binds their queues and serves packets in a
//! single-threaded poll loop. All kernel I/O lives here; deciding what to do with a
//! packet (`examine`) is pure and shared with tests.

use std::os::fd::AsFd;

use log::{debug, error, info, warn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::Config;
use crate::conntrack::{Conntrack, Expectation, Family, Tuple, ctinfo, status};
use crate::control;
use crate::firewall;
use crate::helpers::{Action, Helper, MAX_EXPECTATIONS_PER_PACKET, PRIVATE_DATA_MAX, Packet};
use crate::netlink::attr::Writer;
use crate::netlink::ctnetlink::{self, CtAttrs};
use crate::netlink::msg::{Messages, NLMSG_ERROR};
use crate::netlink::socket::{IoError, Link, Socket};
use crate::netlink::{cthelper, queue, subsys};
use crate::private_cache::PrivateCache;
use crate::reload;
use crate::wire;

/// Receive buffer: a whole 64 KiB packet plus netlink and conntrack attributes.
const RX_BUF: usize = 0x10000 + 4096;
/// Verdicts of one batch, each with private data and possibly an expectation.
const TX_BUF: usize = 32 * 1024;
/// A plain verdict for a packet queued while a queue is being configured.
const STRAY_VERDICT_BUF: usize = 64;
/// How long a request on the control socket waits for the kernel's answer. The kernel
/// answers within the send call; this only bounds a kernel that never does, which must
/// not stall the packet path for ever.
const CTL_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// Requests and their answers on the control socket.
const CTL_BUF: usize = 16 * 1024;
/// How long a stop or reload keeps answering packets that were queued before the
/// helpers were switched off.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(500);
/// Room for a packet whose announcements are rewritten (NAT): as large as a verdict
/// carrying it can be while still fitting the verdict buffer on its own. A larger packet
/// passes unchanged (FTP control segments are a few hundred bytes).
const MANGLE_BUF: usize = TX_BUF - queue::VERDICT_OVERHEAD_MAX;
// The largest verdict (a whole mangled packet and every attribute) fits an empty batch.
const _: () = assert!(MANGLE_BUF + queue::VERDICT_OVERHEAD_MAX <= TX_BUF);
/// How many ports the NAT port search tries, from the announced one upwards (the
/// kernel's nf_nat_exp_find_port tries 128).
const NAT_PORT_ATTEMPTS: u16 = 128;
/// Packets handled before verdicts are flushed and signals looked at again.
const BATCH: usize = 64;
/// Kernel socket buffer for the queue, so bursts wait in the kernel, not on the wire.
const QUEUE_RCVBUF: usize = 4 << 20;

/// The signals the daemon handles through its signalfd: stop, stop, reload, log counters.
fn handled_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        mask.add(s);
    }
    mask
}

/// Block the daemon's signals; main() does this first of all, so that a reload
/// (`service cthelperd reload` right after start) or a stop arriving during start-up,
/// while nft runs or the kernel is being asked, waits for the poll loop instead of
/// killing the process with the signal's default action. Children (nft) get an empty
/// mask from std's spawn.
pub fn block_signals() -> Result<(), Errno> {
    handled_signals().thread_block()
}

/// Undo [`block_signals`] for the one-shot commands (check, status, replay), which are
/// stopped by the signals' default actions.
pub fn unblock_signals() -> Result<(), Errno> {
    handled_signals().thread_unblock()
}

/// When main() began, for reporting how long start-up took.
pub static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Bounds how many lines a kind of per-packet event may log, so that a peer sending
/// thousands of bad announcements cannot flood the router's log. Counters still
/// count every event.
#[derive(Debug)]
pub struct LogLimit {
    window_start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    const PER_WINDOW: u32 = 20;
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    pub const fn new() -> Self {
        LogLimit {
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log this event; when a new window opens, first reports how many
    /// lines the previous one suppressed.
    pub fn allow(&mut self, now: std::time::Instant, what: &str) -> bool {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW);
        if expired {
            if self.suppressed > 0 {
                warn!("{what}: {} more log lines suppressed", self.suppressed);
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < Self::PER_WINDOW {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of one helper (fixed size; reported by `status` later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub expectations: u64,
    pub expectation_errors: u64,
    pub refused: u64,
    pub parse_errors: u64,
    /// Packets sent back with rewritten announcements (NAT).
    pub rewritten: u64,
    /// Announcements that needed a rewrite and did not get one (packet dropped for an
    /// expectation that could not be created, or passed unchanged when it could not
    /// be rewritten).
    pub rewrite_errors: u64,
    /// Expectations deleted again because the packet announcing them was dropped.
    pub withdrawn: u64,
}

/// One configured helper as the daemon runs it.
pub struct Slot {
    pub name: &'static str,
    pub helper: &'static dyn Helper,
    pub families: crate::config::Families,
    pub proto: u8,
    pub queue: u16,
    pub expect_max: u32,
    pub expect_timeout: u32,
    /// What the helper is told about its configuration (`allow_low_ports`).
    pub policy: crate::helpers::Policy,
    pub stats: Stats,
    pub log_limit: LogLimit,
}

impl Slot {
    /// Count an announcement that needed a NAT rewrite and did not get one, and log
    /// why (rate-limited, like every per-packet line).
    fn rewrite_failed(&mut self, why: core::fmt::Arguments<'_>) {
        self.stats.rewrite_errors += 1;
        if self.log_limit.allow(std::time::Instant::now(), self.name) {
            warn!("{}: {why}", self.name);
        }
    }
}

/// A master connection in log lines: "src -> dst:port" of its original tuple.
struct Endpoints<'a>(&'a crate::conntrack::Tuple);

impl core::fmt::Display for Endpoints<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} -> {}:{}", self.0.src, self.0.dst, self.0.dst_port)
    }
}

/// The built-in helper implementation for a kernel helper name.
pub fn builtin_helper(name: &str) -> Option<&'static dyn Helper> {
    static FTP: crate::helpers::ftp::Ftp = crate::helpers::ftp::Ftp;
    static TFTP: crate::helpers::tftp::Tftp = crate::helpers::tftp::Tftp;
    match name {
        "ftp" => Some(&FTP),
        "tftp" => Some(&TFTP),
        _ => None,
    }
}

/// Build the slots for the enabled helpers of a configuration.
pub fn slots_from_config(
    cfg: &Config,
) -> Result<heapless::Vec<Slot, { crate::config::MAX_HELPERS }>, String> {
    let mut slots = heapless::Vec::new();
    if !cfg.enabled {
        return Ok(slots);
    }
    for (index, h) in cfg.helpers.iter().enumerate().filter(|(_, h)| h.enabled) {
        let helper = builtin_helper(h.name)
            .ok_or_else(|| format!("no built-in helper named {:?}", h.name))?;
        let slot = Slot {
            name: h.name,
            helper,
            families: h.families,
            proto: h.proto,
            queue: cfg.queue_of(index),
            expect_max: h.expect_max,
            expect_timeout: h.expect_timeout,
            policy: h.policy(),
            stats: Stats::default(),
            log_limit: LogLimit::new(),
        };
        if slots.push(slot).is_err() {
            return Err("too many helpers".into());
        }
    }
    Ok(slots)
}

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
    pub dir: crate::conntrack::Direction,
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
        .position(|s| s.name == name && s.queue == pkt.queue && s.proto == conntrack.orig.proto)
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
        slots[slot].helper,
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

/// Fixed buffers, allocated once at start.
struct Buffers {
    rx: Box<[u8]>,
    tx: Box<[u8]>,
    ctl: Box<[u8]>,
    ctl_rx: Box<[u8]>,
    /// A queued packet being rewritten for NAT.
    mangle: Box<[u8]>,
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
    control: Option<control::Server>,
    verdict_errors: u64,
    unhandled: u64,
    /// The private data last written per conntrack (several packets in flight).
    private_cache: PrivateCache,
    recorder: Option<Recorder>,
    /// Queue wakeups so far, and whether the last one found a burst (see `run`).
    wakeups: u32,
    greedy_reads: bool,
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

    fn record(&mut self, datagram: &[u8]) {
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

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

impl Daemon {
    /// Open sockets, bind the queues, register and enable the helpers.
    pub fn start(cfg: Config) -> Result<Daemon, StartError> {
        Self::start_with(cfg, Options::default())
    }

    /// `start`, then the firewall table (after registration: nft refuses unknown
    /// helper names) and the status socket.
    pub fn start_with(cfg: Config, opts: Options) -> Result<Daemon, StartError> {
        let slots = slots_from_config(&cfg).map_err(|what| StartError { what, cause: None })?;
        let open = |what: &str| {
            Socket::open().map_err(|cause| StartError {
                what: format!("cannot open a netfilter netlink socket for {what}"),
                cause: Some(Box::new(cause)),
            })
        };
        let queue_sock = open("the queue")?;
        queue_sock.tune_for_queue(QUEUE_RCVBUF);
        let ctl_sock = open("control requests")?;
        ctl_sock
            .set_reply_timeout(CTL_REPLY_TIMEOUT)
            .map_err(|cause| StartError {
                what: "cannot set the control socket's reply timeout".into(),
                cause: Some(Box::new(cause)),
            })?;
        let mut d = Daemon {
            queue_sock,
            ctl_sock,
            slots,
            cfg,
            bufs: Buffers {
                rx: vec![0u8; RX_BUF].into_boxed_slice(),
                tx: vec![0u8; TX_BUF].into_boxed_slice(),
                ctl: vec![0u8; CTL_BUF].into_boxed_slice(),
                ctl_rx: vec![0u8; CTL_BUF].into_boxed_slice(),
                mangle: vec![0u8; MANGLE_BUF].into_boxed_slice(),
                report: vec![0u8; control::REPORT_MAX].into_boxed_slice(),
                proc_queues: vec![0u8; 4096].into_boxed_slice(),
            },
            opts,
            control: None,
            verdict_errors: 0,
            wakeups: 0,
            greedy_reads: false,
            unhandled: 0,
            private_cache: PrivateCache::new(),
            recorder: None,
        };
        // Bind first: once a helper is enabled its packets go to the queue, and a
        // queue nobody listens on would stall its connections.
        for i in 0..d.slots.len() {
            let q = d.slots[i].queue;
            if d.slots[..i].iter().any(|s| s.queue == q) {
                continue;
            }
            d.bind_queue(q).map_err(|cause| StartError {
                what: format!(
                    "cannot bind netfilter queue {q} for helper {}{}",
                    d.slots[i].name,
                    match cause.errno() {
                        Some(Errno::EPERM) | Some(Errno::EBUSY) =>
                            " (another process, e.g. conntrackd, owns it, or CAP_NET_ADMIN is missing)",
                        Some(Errno::EOPNOTSUPP) =>
                            " (conntrack glue missing: CONFIG_NETFILTER_NETLINK_GLUE_CT / kmod-nf-conntrack-netlink)",
                        _ => "",
                    }
                ),
                cause: Some(Box::new(cause)),
            })?;
        }
        for i in 0..d.slots.len() {
            d.register(i)?;
        }
        let registered_ms = PROCESS_START.get().map(|t0| t0.elapsed().as_millis());
        if d.cfg.firewall {
            if let Err(what) = firewall::apply(&d.opts.nft, &firewall::ruleset(&d.cfg)) {
                // Without the table the helpers would sit unused; fail the start so
                // that procd and the log say so, and leave the kernel clean.
                d.disable_helpers();
                return Err(StartError { what, cause: None });
            }
            info!("firewall: table {} loaded", firewall::TABLE);
        }
        if let Some(path) = d.opts.control_socket.clone() {
            // Status is a convenience: without it the helpers still work.
            match control::Server::bind(&path) {
                Ok(server) => d.control = Some(server),
                Err(e) => warn!("status socket disabled: {e}"),
            }
        }
        let names: heapless::String<64> =
            d.slots.iter().fold(heapless::String::new(), |mut acc, s| {
                if !acc.is_empty() {
                    let _ = acc.push_str(", ");
                }
                let _ = acc.push_str(s.name);
                acc
            });
        // Logged once everything is in place (the test harness waits for this line);
        // the kernel registration itself and the firewall step (an nft process) are
        // timed apart because only the first is ours to make fast.
        match (registered_ms, PROCESS_START.get()) {
            (Some(reg), Some(t0)) => info!(
                "helpers registered: {names} (in the kernel {reg} ms after start, serving after {} ms)",
                t0.elapsed().as_millis()
            ),
            _ => info!("helpers registered: {names}"),
        }
        Ok(d)
    }

    pub fn set_recorder(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// Send one ACKed request built by `build` on the control socket.
    fn request(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
    ) -> Result<(), IoError> {
        Ctl {
            link: &mut self.ctl_sock,
            buf: &mut self.bufs.ctl,
            rx: &mut self.bufs.ctl_rx,
        }
        .request(build, |_| {})
    }

    fn bind_queue(&mut self, q: u16) -> Result<(), IoError> {
        let cfg = queue::QueueConfig {
            queue: q,
            max_len: self.cfg.queue_maxlen,
            fail_open: self.cfg.fail_open,
        };
        // The queue belongs to the socket that binds it, so this goes on the queue
        // socket. Asking for conntrack data may load a module and answer EAGAIN once.
        let mut attempt = 0;
        loop {
            match self.queue_request(|w, seq| queue::write_bind(w, seq, &cfg)) {
                Err(e) if e.errno() == Some(Errno::EAGAIN) && attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    fn register(&mut self, i: usize) -> Result<(), StartError> {
        let s = &self.slots[i];
        let (name, proto, families) = (s.name, s.proto, s.families);
        let settings = reload::Settings {
            queue: s.queue,
            expect_max: s.expect_max,
            expect_timeout: s.expect_timeout,
        };
        for family in families.iter() {
            self.register_one(
                reload::Key {
                    name,
                    family,
                    proto,
                },
                settings,
            )?;
        }
        Ok(())
    }

    /// NEW for one family: creates the helper or updates an existing one in place.
    fn register_one(
        &mut self,
        key: reload::Key,
        settings: reload::Settings,
    ) -> Result<(), StartError> {
        let reload::Key {
            name,
            family,
            proto,
        } = key;
        let queue = settings.queue;
        let private_len = builtin_helper(name).map_or(0, |h| h.private_len()) as u32;
        let policy = [cthelper::ExpectPolicy {
            name,
            max_expected: settings.expect_max,
            timeout_secs: settings.expect_timeout,
        }];
        {
            let reg = cthelper::Registration {
                name,
                family,
                l4proto: proto,
                queue,
                policies: &policy,
                private_len,
                enabled: true,
            };
            let mut result = self.request(|w, seq| cthelper::write_new(w, seq, &reg));
            if result.as_ref().err().and_then(|e| e.errno()) == Some(Errno::EBUSY) {
                // A helper of this name exists with another private-data size or
                // policy shape (an older version of us, or conntrackd). The kernel
                // cannot update that in place: replace it. Connections it was
                // helping lose their helper.
                warn!(
                    "helper {name} ({}) exists with an incompatible layout; replacing it",
                    family_name(family)
                );
                let _ = self.request(|w, seq| cthelper::write_del(w, seq, name, family, proto));
                result = self.request(|w, seq| cthelper::write_new(w, seq, &reg));
            }
            result.map_err(|cause| StartError {
                what: format!(
                    "cannot register helper {name} ({}){}",
                    family_name(family),
                    match cause.errno() {
                        Some(Errno::EPERM) => " (needs CAP_NET_ADMIN)",
                        Some(Errno::EEXIST) =>
                            " (a kernel helper of that name is loaded, e.g. nf_conntrack_ftp: unload it and forbid it in /etc/modprobe.d)",
                        Some(Errno::EINVAL) | Some(Errno::EOPNOTSUPP) | Some(Errno::ENOENT) =>
                            " (is nfnetlink_cthelper available? CONFIG_NF_CT_NETLINK_HELPER / kmod-nfnetlink-cthelper; try `cthelperd check`)",
                        _ => "",
                    }
                ),
                cause: Some(Box::new(cause)),
            })?;
            debug!(
                "registered helper {name} {} proto {proto} queue {queue} private {private_len} bytes",
                family_name(family)
            );
        }
        Ok(())
    }

    fn disable_one(&mut self, key: reload::Key) -> Result<(), IoError> {
        self.request(|w, seq| {
            cthelper::write_set_status(w, seq, key.name, key.family, key.proto, false)
        })
    }

    fn queue_request(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
    ) -> Result<(), IoError> {
        // Queue configuration goes on the queue socket: a queue belongs to the
        // socket that bound it. Packets of queues already bound may arrive meanwhile
        // (a reload; helpers still registered after a crash): they are answered.
        let (result, strays) = queue_transact(
            &mut self.queue_sock,
            &mut self.bufs.ctl,
            &mut self.bufs.rx,
            build,
        );
        self.unhandled += strays;
        result
    }

    /// SIGHUP: re-read the file; refuse a bad one and keep running unchanged;
    /// otherwise apply only what changed (reload::plan).
    fn reload(&mut self) {
        let file = self
            .opts
            .config_path
            .as_deref()
            .unwrap_or(std::path::Path::new(crate::config::DEFAULT_PATH))
            .display()
            .to_string();
        let new = match Config::load(self.opts.config_path.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused: {e}; keeping the running configuration");
                return;
            }
        };
        let new_slots = match slots_from_config(&new) {
            Ok(s) => s,
            Err(e) => {
                error!("reload refused: {file}: {e}; keeping the running configuration");
                return;
            }
        };
        if new.syslog != self.cfg.syslog {
            warn!("reload: option syslog changes at the next start");
        }
        if !new.enabled {
            info!("reload: globals.enabled is 0: disabling all helpers");
        }
        let old = core::mem::replace(&mut self.cfg, new);
        let old_regs = reload::registrations(&old);
        let actions = reload::plan(&old, &self.cfg, self.opts.cli_log_level);
        let mut failures = 0;
        for action in &actions {
            let result: Result<(), String> = match *action {
                reload::Action::LogLevel(level) => {
                    log::set_max_level(level);
                    info!("reload: log level {level}");
                    Ok(())
                }
                reload::Action::BindQueue(q) => self
                    .bind_queue(q)
                    .map(|()| info!("reload: queue {q} bound"))
                    .map_err(|e| format!("cannot bind queue {q}: {e}")),
                reload::Action::QueueParams(q) => {
                    let qc = queue::QueueConfig {
                        queue: q,
                        max_len: self.cfg.queue_maxlen,
                        fail_open: self.cfg.fail_open,
                    };
                    self.queue_request(|w, seq| queue::write_params(w, seq, &qc))
                        .map(|()| {
                            info!(
                                "reload: queue {q}: maxlen {} fail_open {}",
                                qc.max_len, qc.fail_open
                            )
                        })
                        .map_err(|e| format!("cannot configure queue {q}: {e}"))
                }
                reload::Action::Register(key, settings) => {
                    let verb = if old_regs.iter().any(|(k, _)| *k == key) {
                        "updated"
                    } else {
                        "registered"
                    };
                    self.register_one(key, settings)
                        .map(|()| {
                            info!(
                                "reload: helper {} ({}) {verb}: queue {} expect_max {} expect_timeout {}",
                                key.name,
                                family_name(key.family),
                                settings.queue,
                                settings.expect_max,
                                settings.expect_timeout
                            )
                        })
                        .map_err(|e| e.to_string())
                }
                reload::Action::Firewall => {
                    firewall::apply(&self.opts.nft, &firewall::ruleset(&self.cfg))
                        .map(|()| info!("reload: table {} replaced", firewall::TABLE))
                }
                reload::Action::RemoveFirewall => firewall::remove(&self.opts.nft)
                    .map(|()| info!("reload: table {} removed", firewall::TABLE)),
                reload::Action::Disable(key) => self
                    .disable_one(key)
                    .map(|()| {
                        info!(
                            "reload: helper {} ({}) disabled",
                            key.name,
                            family_name(key.family)
                        )
                    })
                    .map_err(|e| {
                        format!(
                            "cannot disable helper {} ({}): {e}",
                            key.name,
                            family_name(key.family)
                        )
                    }),
                reload::Action::Drain => {
                    self.install_slots(&new_slots);
                    self.drain();
                    Ok(())
                }
                reload::Action::UnbindQueue(q) => self
                    .queue_request(|w, seq| queue::write_unbind(w, seq, q))
                    .map(|()| info!("reload: queue {q} unbound"))
                    .map_err(|e| format!("cannot unbind queue {q}: {e}")),
            };
            if let Err(e) = result {
                failures += 1;
                error!("reload: {e}");
            }
        }
        self.install_slots(&new_slots);
        info!(
            "configuration reloaded from {file}: {} actions, {failures} failed",
            actions.len()
        );
    }

    /// Switch to the slots of a new configuration, keeping each helper's counters.
    fn install_slots(&mut self, new: &heapless::Vec<Slot, { crate::config::MAX_HELPERS }>) {
        let mut slots: heapless::Vec<Slot, { crate::config::MAX_HELPERS }> = heapless::Vec::new();
        for n in new {
            let old = self.slots.iter().find(|s| s.name == n.name);
            let _ = slots.push(Slot {
                name: n.name,
                helper: n.helper,
                families: n.families,
                proto: n.proto,
                queue: n.queue,
                expect_max: n.expect_max,
                expect_timeout: n.expect_timeout,
                policy: n.policy,
                stats: old.map_or(Stats::default(), |o| o.stats),
                log_limit: LogLimit::new(),
            });
        }
        self.slots = slots;
    }

    /// Write the status report for the control socket into the report buffer.
    fn status_report(&mut self) -> usize {
        let mut lines: heapless::Vec<control::HelperLine<'_>, { crate::config::MAX_HELPERS }> =
            heapless::Vec::new();
        for s in &self.slots {
            let _ = lines.push(control::HelperLine {
                name: s.name,
                families: s.families,
                proto: s.proto,
                queue: s.queue,
                packets: s.stats.packets,
                expectations: s.stats.expectations,
                expectation_errors: s.stats.expectation_errors,
                refused: s.stats.refused,
                parse_errors: s.stats.parse_errors,
                rewritten: s.stats.rewritten,
                rewrite_errors: s.stats.rewrite_errors,
                withdrawn: s.stats.withdrawn,
            });
        }
        let globals = control::Globals {
            verdict_errors: self.verdict_errors,
            passed_without_helper: self.unhandled,
            private_cache_used: self.private_cache.used,
            private_cache_evictions: self.private_cache.evictions,
        };
        let proc_text = control::read_proc_queues(&mut self.bufs.proc_queues);
        control::report(&mut self.bufs.report, &lines, &globals, proc_text)
    }

    /// Switch every helper off (the kernel then passes their packets unqueued) and
    /// report failures; used on stop.
    fn disable_helpers(&mut self) {
        for i in 0..self.slots.len() {
            let (name, proto, families) = (
                self.slots[i].name,
                self.slots[i].proto,
                self.slots[i].families,
            );
            for family in families.iter() {
                if let Err(e) = self.request(|w, seq| {
                    cthelper::write_set_status(w, seq, name, family, proto, false)
                }) {
                    error!(
                        "cannot disable helper {name} ({}): {e}",
                        family_name(family)
                    );
                }
            }
        }
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
            let (queue_ready, signal_ready, control_ready) = {
                // The status socket, when there is one, is polled too; without one
                // the third entry watches the signal fd twice (harmless).
                let control_fd = match &self.control {
                    Some(c) => c.listener().as_fd(),
                    None => sfd.as_fd(),
                };
                let mut fds = [
                    PollFd::new(self.queue_sock.as_fd(), PollFlags::POLLIN),
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(control_fd, PollFlags::POLLIN),
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
                )
            };
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
                    Ok(n) => self.greedy_reads = n > 1,
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

    fn log_stats(&self) {
        for s in &self.slots {
            info!(
                "{}: packets {} expectations {} expectation errors {} refused {} parse errors {} rewritten {} rewrite errors {} withdrawn {}",
                s.name,
                s.stats.packets,
                s.stats.expectations,
                s.stats.expectation_errors,
                s.stats.refused,
                s.stats.parse_errors,
                s.stats.rewritten,
                s.stats.rewrite_errors,
                s.stats.withdrawn
            );
        }
        info!(
            "verdict errors {} packets passed without a helper {} private data from the cache {} cache evictions {}",
            self.verdict_errors,
            self.unhandled,
            self.private_cache.used,
            self.private_cache.evictions
        );
    }

    /// Clean stop: disable the helpers so the kernel stops queueing, answer what is
    /// already queued, then let the queue go with the socket.
    fn stop(&mut self) {
        self.disable_helpers();
        self.drain();
        // After disabling (the kernel skips the helpers, so nothing depends on the
        // table any more). A failure is logged; the stop is still clean.
        if self.cfg.enabled && self.cfg.firewall {
            match firewall::remove(&self.opts.nft) {
                Ok(()) => info!("firewall: table {} removed", firewall::TABLE),
                Err(e) => error!("cannot remove table {}: {e}", firewall::TABLE),
            }
        }
        // Removes the socket file.
        self.control = None;
        self.log_stats();
        info!("helpers disabled, exiting");
    }

    /// Answer what is already queued: packets queued before a helper was disabled
    /// or moved still wait for a verdict; a short grace period catches those in
    /// flight on other CPUs.
    fn drain(&mut self) {
        let deadline = std::time::Instant::now() + DRAIN_TIME;
        while std::time::Instant::now() < deadline {
            match self.serve_batch(true) {
                Ok(0) => {
                    let mut fds = [PollFd::new(self.queue_sock.as_fd(), PollFlags::POLLIN)];
                    if !matches!(poll(&mut fds, PollTimeout::from(20u8)), Ok(n) if n > 0) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!("while draining the queue: {e}");
                    break;
                }
            }
        }
    }

    /// Handle queued packets without blocking — up to BATCH when `greedy`, else the
    /// first one — and send their verdicts in one send. Returns how many packets were
    /// handled. Every packet whose id can be read gets a verdict.
    fn serve_batch(&mut self, greedy: bool) -> Result<usize, IoError> {
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

/// Append a verdict to the batch in `tx[..tx_len]`, flushing the batch first when it is
/// full; returns the new batch length. A verdict always fits an empty batch (TX_BUF is
/// sized for the largest one, checked at compile time), so none is ever lost to size.
fn push_verdict(
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

/// Answer a packet queued while the queue socket waits for the kernel's answer to a
/// configuration request (binding a further queue at start or reload): it gets an accept
/// at once, unhelped, because a packet without a verdict stays held in the kernel.
/// Returns whether `msg` was such a packet.
fn accept_stray(link: &dyn Link, msg: &crate::netlink::msg::Message<'_>) -> bool {
    let Some((queue, id)) = queue::packet_ref(msg) else {
        return false;
    };
    let mut buf = [0u8; STRAY_VERDICT_BUF];
    let mut w = Writer::new(&mut buf);
    let sent = queue::write_verdict(
        &mut w,
        0,
        &queue::Verdict::plain(queue, id, queue::NF_ACCEPT),
    )
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
fn queue_transact(
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

/// What to send back for one examined packet.
#[derive(Debug)]
struct Answer {
    verdict: u32,
    /// The verdict carries the private data.
    help: bool,
    /// The private data went out over ctnetlink instead (with an IPv6 sequence
    /// adjustment).
    private_written: bool,
    /// The expectation to attach to the verdict (unconfirmed master).
    attached: Option<Expectation>,
    /// The rewritten packet's length in the mangle buffer.
    rewritten_len: Option<usize>,
    /// The verdict must make the kernel record a sequence adjustment.
    seq_adjust: bool,
}

/// Carry out what the helper asked for one packet: create its expectations, rewrite its
/// announcements for NAT, and decide the verdict.
fn answer(
    slot: &mut Slot,
    ex: &Examined,
    payload: &[u8],
    mangle: &mut [u8],
    ctl: &mut Ctl<'_>,
) -> Answer {
    let applied = apply(slot, ex, ctl);
    let mut a = Answer {
        verdict: queue::NF_ACCEPT,
        help: ex.action.private_changed,
        private_written: false,
        attached: applied.attached,
        rewritten_len: None,
        seq_adjust: false,
    };
    if ex.action.rewrites.is_empty() {
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
            withdraw(slot, ex, &applied, ctl);
        }
    }
    a
}

/// Count the outcome and create its expectations. Expectations of a confirmed
/// master go through ctnetlink with an ACK so failures are known; an unconfirmed
/// master (a first packet, such as a TFTP request) is not yet findable there, so
/// its first expectation rides on the verdict and is returned. An expectation of a
/// NATed master whose port is taken on the outside address (EEXIST, EBUSY) is retried on the
/// next ports, as the kernel's NAT helpers do; the port it got is reported so the
/// announcement can name it.
fn apply(slot: &mut Slot, ex: &Examined, ctl: &mut Ctl<'_>) -> Applied {
    slot.stats.packets += 1;
    if ex.action.parse_error {
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
    for r in &ex.action.refusals {
        slot.stats.refused += 1;
        if !slot.log_limit.allow(std::time::Instant::now(), slot.name) {
            continue;
        }
        info!(
            "{}: refused {} announcing {} port {} from {} ({:?})",
            slot.name, r.what, r.announced, r.port, r.sender, r.reason
        );
    }
    let confirmed = ex.conntrack.status & status::CONFIRMED != 0;
    let mut applied = Applied {
        attached: None,
        ports: [None; MAX_EXPECTATIONS_PER_PACKET],
    };
    for (i, exp) in ex.action.expectations.iter().enumerate() {
        if !confirmed {
            if applied.attached.is_none() {
                applied.attached = Some(*exp);
                applied.ports[i] = Some(exp.dst_port);
                slot.stats.expectations += 1;
                // The kernel does not report the outcome of an attached
                // expectation; this says only that it was asked for.
                debug!(
                    "{}: expecting {} {} -> {}:{}{} (attached to the verdict)",
                    slot.name,
                    exp.proto,
                    exp.src,
                    exp.dst,
                    exp.dst_port,
                    NatNote(exp)
                );
            } else {
                slot.stats.expectation_errors += 1;
                warn!(
                    "{}: more than one expectation for an unconfirmed connection; dropped one",
                    slot.name
                );
            }
            continue;
        }
        match create_expectation(slot, ex, exp, ctl) {
            (Ok(()), port) => {
                slot.stats.expectations += 1;
                applied.ports[i] = Some(port);
                debug!(
                    "{}: expecting {} {} -> {}:{}{}",
                    slot.name,
                    exp.proto,
                    exp.src,
                    exp.dst,
                    port,
                    NatNote(exp)
                );
            }
            (Err(e), last) => {
                slot.stats.expectation_errors += 1;
                if slot.log_limit.allow(std::time::Instant::now(), slot.name) {
                    warn!(
                        "{}: cannot create expectation {} -> {}:{} (ports tried {}..={last}): {e}",
                        slot.name, exp.src, exp.dst, exp.dst_port, exp.dst_port
                    );
                }
            }
        }
    }
    applied
}

/// Create one expectation of a confirmed master over ctnetlink; returns the outcome and
/// the port it got (or the last one tried). A NAT expectation is created exclusively so that
/// a port another master holds is seen (write_exp_new) and the next port is tried, up to
/// NAT_PORT_ATTEMPTS ports and never past 65535; one this master already holds is
/// refreshed (its timer restarted) and keeps its port, as the kernel does.
fn create_expectation(
    slot: &Slot,
    ex: &Examined,
    exp: &Expectation,
    ctl: &mut Ctl<'_>,
) -> (Result<(), IoError>, u16) {
    let mut exp = *exp;
    let mut exclusive = exp.nat.is_some();
    let first = exp.dst_port;
    loop {
        let result = ctl.request(
            |w, seq| {
                ctnetlink::write_exp_new(
                    w,
                    seq,
                    &exp,
                    &ex.conntrack.orig,
                    ex.conntrack.zone,
                    exclusive,
                    slot.expect_timeout,
                )
            },
            |_| {},
        );
        let next_port = exp
            .dst_port
            .checked_add(1)
            .filter(|p| u32::from(*p) - u32::from(first) < u32::from(NAT_PORT_ATTEMPTS));
        match result {
            Ok(()) => return (Ok(()), exp.dst_port),
            Err(e)
                if exclusive
                    && e.errno() == Some(Errno::EEXIST)
                    && expectation_master(ctl, &exp, ex.conntrack.zone)
                        == Some(ex.conntrack.orig) =>
            {
                // Ours (a repeated or retransmitted announcement): refresh it.
                exclusive = false;
            }
            Err(e)
                if matches!(e.errno(), Some(Errno::EBUSY | Errno::EEXIST)) && exp.nat.is_some() =>
            {
                match next_port {
                    Some(p) => {
                        exp.dst_port = p;
                        exclusive = true;
                    }
                    None => return (Err(e), exp.dst_port),
                }
            }
            Err(e) => return (Err(e), exp.dst_port),
        }
    }
}

/// Delete the expectations `apply` created over ctnetlink for a packet that is dropped
/// after all (as nf_nat_ftp's nf_ct_unexpect_related): nothing may stay open for an
/// announcement the peer never receives.
fn withdraw(slot: &mut Slot, ex: &Examined, applied: &Applied, ctl: &mut Ctl<'_>) {
    for (i, exp) in ex.action.expectations.iter().enumerate() {
        let Some(port) = applied.ports.get(i).copied().flatten() else {
            continue;
        };
        if applied.attached.is_some() {
            // Attached to the verdict, which is now a drop without it: never created.
            continue;
        }
        let exp = Expectation {
            dst_port: port,
            ..*exp
        };
        match ctl.request(
            |w, seq| ctnetlink::write_exp_delete(w, seq, &exp, ex.conntrack.zone),
            |_| {},
        ) {
            Ok(()) => slot.stats.withdrawn += 1,
            Err(e) => {
                slot.stats.expectation_errors += 1;
                if slot.log_limit.allow(std::time::Instant::now(), slot.name) {
                    warn!(
                        "{}: cannot delete expectation {} -> {}:{} of a dropped packet: {e}",
                        slot.name, exp.src, exp.dst, exp.dst_port
                    );
                }
            }
        }
    }
}

/// The master (original tuple) of the pending expectation with `exp`'s tuple, if
/// the kernel has one.
fn expectation_master(ctl: &mut Ctl<'_>, exp: &Expectation, zone: Option<u16>) -> Option<Tuple> {
    let mut master = None;
    ctl.request(
        |w, seq| ctnetlink::write_exp_get(w, seq, exp, zone),
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
fn rewrite(
    slot: &mut Slot,
    ex: &Examined,
    applied: &Applied,
    packet: &[u8],
    buf: &mut [u8],
) -> Rewritten {
    let rewrites = &ex.action.rewrites;
    let port_of = |i: usize| applied.ports.get(i).copied().flatten();
    // Without its expectation a rewritten announcement would name a translated
    // endpoint nobody expects, and an unrewritten one the real endpoint the peer
    // cannot reach (and should not learn): drop the packet so the sender
    // retransmits, as the kernel's nf_nat_ftp does.
    let master = Endpoints(&ex.conntrack.orig);
    if rewrites.iter().any(|rw| port_of(rw.expectation).is_none()) {
        slot.rewrite_failed(format_args!(
            "dropped a packet of {master}: no expectation for its NATed announcement"
        ));
        return Rewritten::Drop;
    }
    let result = match buf.get_mut(..packet.len()) {
        Some(copy) => {
            copy.copy_from_slice(packet);
            crate::nat::apply_rewrites(buf, packet.len(), rewrites, port_of)
        }
        None => Err(crate::nat::NatError::NoRoom {
            needed: packet.len(),
            available: buf.len(),
        }),
    };
    match result {
        Ok(r) if r.changed => {
            debug!(
                "{}: rewrote {} announcement(s) for NAT ({} -> {} bytes)",
                slot.name,
                rewrites.len(),
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
fn adjust_sequence(
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
        .action
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
fn translate(
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

/// The control socket and its buffers, borrowed apart from the rest of the daemon so the
/// packet path can use them while a helper slot is borrowed too. Tests put a scripted
/// kernel behind `link`.
struct Ctl<'a> {
    link: &'a mut dyn Link,
    buf: &'a mut [u8],
    rx: &'a mut [u8],
}

impl Ctl<'_> {
    /// Send one request built by `build` (given the sequence number) and wait for its
    /// ACK; `on_reply` sees any other message answering it.
    fn request(
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
}

/// What `translate` decided for a packet.
#[derive(Debug, PartialEq, Eq)]
enum Translated {
    /// Send the original packet (the announcement was already right).
    Unchanged,
    /// Send `mangle[..len]`; `private_written`: the private data went out over
    /// ctnetlink with an IPv6 sequence adjustment.
    Packet { len: usize, private_written: bool },
    /// Drop the packet and withdraw its expectations.
    Drop,
}

/// What `apply` did with a packet's expectations.
struct Applied {
    /// The expectation to attach to the verdict (unconfirmed master).
    attached: Option<Expectation>,
    /// The port each expectation got, by index; None where it could not be created.
    ports: [Option<u16>; MAX_EXPECTATIONS_PER_PACKET],
}

/// What to send back for a packet with announcements to rewrite.
#[derive(Debug, PartialEq, Eq)]
enum Rewritten {
    /// The rewritten packet, `bufs.mangle[..len]`.
    Packet(usize),
    /// The original packet (already right).
    Unchanged,
    Drop,
}

/// " (NAT: real endpoint A port P)" for expectations that follow a NATed master.
struct NatNote<'a>(&'a crate::conntrack::Expectation);

impl core::fmt::Display for NatNote<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0.nat {
            Some(n) => write!(f, " (NAT to {} port {})", n.saved_addr, n.saved_port),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{IPPROTO_TCP, Tuple};
    use crate::netlink::ctnetlink::{CTA_HELP_INFO, CTA_HELP_NAME, put_tuple};
    use crate::netlink::msg::NfGenMsg;
    use crate::netlink::{nfnl_type, queue::NFQNL_MSG_PACKET};
    use std::time::Instant;

    const CLIENT: [u8; 4] = [192, 0, 2, 2];
    const SERVER: [u8; 4] = [198, 51, 100, 2];

    /// Original and reply tuples of a client -> server connection to `port`.
    fn tuples(proto: u8, port: u16) -> (Tuple, Tuple) {
        let orig = Tuple {
            src: CLIENT.into(),
            dst: SERVER.into(),
            proto,
            src_port: 40000,
            dst_port: port,
        };
        (orig, orig.reversed())
    }

    /// The conntrack part of a queued packet (NFQA_CT and NFQA_CT_INFO).
    struct CtFixture<'a> {
        tuples: (Tuple, Tuple),
        status: u32,
        helper: Option<&'a str>,
        info: Option<&'a [u8]>,
        ct_info: u32,
    }

    /// A PACKET message as the kernel builds it: queue, layer-3 packet, conntrack.
    fn write_queued(buf: &mut [u8], queue: u16, ip: &[u8], ct: Option<&CtFixture<'_>>) -> usize {
        let mut w = Writer::new(buf);
        let m = w
            .begin_nfnl(
                nfnl_type(subsys::QUEUE, NFQNL_MSG_PACKET),
                0,
                0,
                NfGenMsg {
                    family: 2,
                    version: 0,
                    res_id: queue,
                },
            )
            .unwrap();
        w.put(1, &[0, 0, 0, 9, 8, 0, 4]).unwrap();
        w.put(10, ip).unwrap();
        if let Some(ct) = ct {
            let nest = w.begin_nested(11).unwrap();
            put_tuple(&mut w, 1, &ct.tuples.0).unwrap();
            put_tuple(&mut w, 2, &ct.tuples.1).unwrap();
            w.put_be32(3, ct.status).unwrap();
            w.put_be32(ctnetlink::CTA_ID, 0x1234_5678).unwrap();
            if let Some(name) = ct.helper {
                let h = w.begin_nested(5).unwrap();
                w.put_str(CTA_HELP_NAME, name).unwrap();
                if let Some(info) = ct.info {
                    w.put(CTA_HELP_INFO, info).unwrap();
                }
                w.end_nested(h).unwrap();
            }
            w.end_nested(nest).unwrap();
            w.put_be32(12, ct.ct_info).unwrap();
        }
        w.end_msg(m).unwrap();
        w.len()
    }

    /// A reply-direction segment of an established FTP control connection.
    fn queued(
        buf: &mut [u8],
        helper: Option<&str>,
        info: &[u8],
        seq: u32,
        text: &[u8],
        with_ct: bool,
    ) -> usize {
        let ip = crate::wire::ipv4::tests::build(
            SERVER,
            CLIENT,
            IPPROTO_TCP,
            &crate::wire::tcp::tests::build(21, 40000, seq, 0x18, text),
        );
        let ct = CtFixture {
            tuples: tuples(IPPROTO_TCP, 21),
            status: status::CONFIRMED | status::SEEN_REPLY,
            helper,
            info: Some(info),
            ct_info: ctinfo::ESTABLISHED_REPLY,
        };
        write_queued(
            buf,
            Config::default().queue_of(0),
            &ip,
            with_ct.then_some(&ct),
        )
    }

    fn run(slots: &[Slot], buf: &[u8]) -> Result<Examined, Skip> {
        let msg = Messages::new(buf).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        examine(
            slots,
            &mut PrivateCache::new(),
            &pkt,
            std::time::Instant::now(),
        )
    }

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
        use crate::conntrack::IPPROTO_UDP;
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
    fn log_limit_caps_lines_per_window_and_reopens() {
        let mut l = LogLimit::new();
        let t0 = std::time::Instant::now();
        let allowed = (0..100).filter(|_| l.allow(t0, "t")).count();
        assert_eq!(allowed, LogLimit::PER_WINDOW as usize);
        assert_eq!(l.suppressed, 100 - u64::from(LogLimit::PER_WINDOW));
        assert!(l.allow(t0 + LogLimit::WINDOW, "t"));
        assert_eq!(l.suppressed, 0);
    }

    /// A 227 from a port-forwarded server (outside client 203.0.113.9 -> 192.0.2.1:21,
    /// forwarded to 198.51.100.2:21), queued with private data that makes it parsed.
    fn queued_forwarded_227(buf: &mut [u8]) -> usize {
        queued_forwarded(buf, b"227 Entering Passive Mode (198,51,100,2,156,64)\r\n")
    }

    /// A reply segment `text` from that port-forwarded server.
    fn queued_forwarded(buf: &mut [u8], text: &[u8]) -> usize {
        let public: [u8; 4] = [192, 0, 2, 1];
        let outside: [u8; 4] = [203, 0, 113, 9];
        let ip = crate::wire::ipv4::tests::build(
            public,
            outside,
            IPPROTO_TCP,
            &crate::wire::tcp::tests::build(21, 50000, 7000, 0x18, text),
        );
        let orig = Tuple {
            src: outside.into(),
            dst: public.into(),
            proto: IPPROTO_TCP,
            src_port: 50000,
            dst_port: 21,
        };
        let reply = Tuple {
            src: SERVER.into(),
            dst: outside.into(),
            proto: IPPROTO_TCP,
            src_port: 21,
            dst_port: 50000,
        };
        let mut info = [0u8; 32];
        crate::helpers::ftp::State::picked_up().encode(&mut info);
        let ct = CtFixture {
            tuples: (orig, reply),
            status: status::CONFIRMED | status::SEEN_REPLY | status::DST_NAT,
            helper: Some("ftp"),
            info: Some(&info),
            ct_info: ctinfo::ESTABLISHED_REPLY,
        };
        write_queued(buf, Config::default().queue_of(0), &ip, Some(&ct))
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

    fn applied(port: Option<u16>) -> Applied {
        let mut ports = [None; MAX_EXPECTATIONS_PER_PACKET];
        ports[0] = port;
        Applied {
            attached: None,
            ports,
        }
    }

    #[test]
    fn forwarded_227_is_rewritten_with_the_port_the_search_found() {
        let mut slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued_forwarded_227(&mut buf);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        let ex = examine(&slots, &mut PrivateCache::new(), &pkt, Instant::now()).unwrap();
        let exp = ex.action.expectations[0];
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
        let mut same = ex.action.rewrites.clone();
        same[0].addr = SERVER.into();
        let ex_same = Examined {
            action: Action {
                rewrites: same,
                ..Action::default()
            },
            ..ex
        };
        assert!(matches!(
            rewrite(slot, &ex_same, &applied(Some(40000)), pkt.payload, &mut out),
            Rewritten::Unchanged
        ));
        assert_eq!(slot.stats.rewrite_errors, 2);
    }

    // ---- A scripted kernel behind the control and queue sockets ----

    use crate::netlink::ctnetlink::{
        CTA_EXPECT_TIMEOUT, CTA_EXPECT_TUPLE, IPCTNL_MSG_EXP_DELETE, IPCTNL_MSG_EXP_GET,
        IPCTNL_MSG_EXP_NEW, parse_tuple,
    };
    use crate::netlink::msg::{Header, NLM_F_ACK, NLM_F_EXCL, NLMSG_HDRLEN};
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// How the fake kernel answers one request.
    enum Reply {
        Ack,
        Errno(Errno),
        /// These messages (built by the closure with the request's seq), then the ACK.
        Then(Vec<u8>),
    }

    /// Records every request and answers those that ask for an ACK through `script`;
    /// `recv` hands out what is waiting, and times out (as SO_RCVTIMEO) when nothing is.
    struct FakeKernel {
        seq: u32,
        inbox: RefCell<VecDeque<Vec<u8>>>,
        sent: RefCell<Vec<Vec<u8>>>,
        #[allow(clippy::type_complexity)]
        script: RefCell<Box<dyn FnMut(&crate::netlink::msg::Message<'_>) -> Reply>>,
    }

    impl FakeKernel {
        fn new(script: impl FnMut(&crate::netlink::msg::Message<'_>) -> Reply + 'static) -> Self {
            FakeKernel {
                seq: 100,
                inbox: RefCell::new(VecDeque::new()),
                sent: RefCell::new(Vec::new()),
                script: RefCell::new(Box::new(script)),
            }
        }

        fn acking() -> Self {
            Self::new(|_| Reply::Ack)
        }

        /// The (nfnetlink subsystem, message) types of the requests sent so far.
        fn kinds(&self) -> Vec<(u8, u8)> {
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
    fn ack_for(req: &Header, errno: i32) -> Vec<u8> {
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
                if msg.header.flags & NLM_F_ACK == 0 {
                    continue;
                }
                let reply = (self.script.borrow_mut())(&msg);
                let mut inbox = self.inbox.borrow_mut();
                match reply {
                    Reply::Ack => inbox.push_back(ack_for(&msg.header, 0)),
                    Reply::Errno(e) => inbox.push_back(ack_for(&msg.header, e as i32)),
                    Reply::Then(m) => {
                        inbox.push_back(m);
                        inbox.push_back(ack_for(&msg.header, 0));
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
        let slots = slots_from_config(&Config::default()).unwrap();
        let mut buf = [0u8; 1024];
        let n = queued_forwarded_227(&mut buf);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = queue::parse_packet(&msg).unwrap();
        let ex = examine(&slots, &mut PrivateCache::new(), &pkt, Instant::now()).unwrap();
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

    #[test]
    fn a_nat_rewrite_that_changes_the_length_makes_the_verdict_carry_nfqa_ct() {
        // A 227 at a line start whose segment does not end the line: the private data
        // does not change, the rewrite shortens the payload by 3 bytes. Without NFQA_CT
        // the kernel would not record the sequence adjustment and the TCP stream would
        // desynchronise.
        let slots = slots_from_config(&Config::default()).unwrap();
        let (mut slots2, mut ex, payload) = forwarded_227();
        let _ = slots;
        ex.action.private_changed = false;
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
        ex.action.private_changed = false;
        ex.action.rewrites[0].addr = [198, 51, 100, 22].into();
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
        let exp0 = ex.action.expectations[0];
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
        slot.expect_timeout = 77;
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
        ex.action.expectations[0].dst_port = u16::MAX;
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
        // verdict ACCEPT, id 9 (the fixture's packet id)
        assert_eq!(t[2].unwrap().payload, &[0, 0, 0, 1, 0, 0, 0, 9]);
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

    #[test]
    fn a_second_packet_in_flight_sees_the_first_ones_private_data() {
        // Two reply segments of one connection queued before the first verdict: both
        // carry the same (old) private data. The second starts where the first ended,
        // a line start only the first one's update records.
        let slots = slots_from_config(&Config::default()).unwrap();
        let mut cache = PrivateCache::new();
        let now = Instant::now();
        let mut st = crate::helpers::ftp::State::default();
        st.record_line_start(crate::conntrack::Direction::Reply, 1000);
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
