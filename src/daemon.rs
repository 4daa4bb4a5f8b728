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
use crate::conntrack::{Conntrack, Family, ctinfo, status};
use crate::control;
use crate::firewall;
use crate::helpers::{Action, Helper, MAX_EXPECTATIONS_PER_PACKET, PRIVATE_DATA_MAX, Packet};
use crate::netlink::attr::Writer;
use crate::netlink::ctnetlink::{self, CtAttrs};
use crate::netlink::msg::{Messages, NLMSG_ERROR};
use crate::netlink::socket::{IoError, Socket};
use crate::netlink::{cthelper, queue, subsys};
use crate::reload;
use crate::wire;

/// Receive buffer: a whole 64 KiB packet plus netlink and conntrack attributes.
const RX_BUF: usize = 0x10000 + 4096;
/// Verdicts of one batch, each with private data and possibly an expectation.
const TX_BUF: usize = 32 * 1024;
/// Requests and their answers on the control socket.
const CTL_BUF: usize = 16 * 1024;
/// How long a stop or reload keeps answering packets that were queued before the
/// helpers were switched off.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(500);
/// Room for a packet whose announcements are rewritten (NAT): as large as a verdict
/// carrying it can be while still fitting the verdict buffer on its own. A larger packet
/// passes unchanged (FTP control segments are a few hundred bytes).
const MANGLE_BUF: usize = TX_BUF - 1024;
/// How many ports the NAT port search tries, from the announced one upwards (the
/// kernel's nf_nat_exp_find_port tries 128).
const NAT_PORT_ATTEMPTS: u16 = 128;
/// Packets handled before verdicts are flushed and signals looked at again.
const BATCH: usize = 64;
/// Kernel socket buffer for the queue, so bursts wait in the kernel, not on the wire.
const QUEUE_RCVBUF: usize = 4 << 20;

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

/// Find the helper for a queued packet and run it. Pure: no I/O.
pub fn examine(slots: &[Slot], pkt: &queue::QueuedPacket<'_>) -> Result<Examined, Skip> {
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
    overruns: u64,
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
            overruns: 0,
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
            sock: &mut self.ctl_sock,
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
            let seq = self.queue_sock.next_seq();
            let mut w = Writer::new(&mut self.bufs.ctl);
            queue::write_bind(&mut w, seq, &cfg)?;
            let len = w.len();
            match self
                .queue_sock
                .transact(&self.bufs.ctl[..len], seq, &mut self.bufs.rx, |_| {})
            {
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
        // socket that bound it.
        let seq = self.queue_sock.next_seq();
        let mut w = Writer::new(&mut self.bufs.ctl);
        build(&mut w, seq)?;
        let len = w.len();
        self.queue_sock
            .transact(&self.bufs.ctl[..len], seq, &mut self.bufs.rx, |_| {})
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
            });
        }
        let globals = control::Globals {
            verdict_errors: self.verdict_errors,
            passed_without_helper: self.unhandled,
            overruns: self.overruns,
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
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGUSR1,
        ] {
            mask.add(s);
        }
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
                "{}: packets {} expectations {} expectation errors {} refused {} parse errors {} rewritten {} rewrite errors {}",
                s.name,
                s.stats.packets,
                s.stats.expectations,
                s.stats.expectation_errors,
                s.stats.refused,
                s.stats.parse_errors,
                s.stats.rewritten,
                s.stats.rewrite_errors
            );
        }
        info!(
            "verdict errors {} packets passed without a helper {} queue overruns {}",
            self.verdict_errors, self.unhandled, self.overruns
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
    /// handled.
    fn serve_batch(&mut self, greedy: bool) -> Result<usize, IoError> {
        let mut handled = 0;
        let mut tx_len = 0;
        while handled < BATCH && (greedy || handled == 0) {
            let datagram = match self.queue_sock.recv(&mut self.bufs.rx, true) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                // The kernel dropped messages for us (queue overrun despite
                // NETLINK_NO_ENOBUFS on old kernels): those packets are gone or
                // were accepted by fail-open; keep serving the rest.
                Err(e) if e.errno() == Some(Errno::ENOBUFS) => {
                    self.overruns += 1;
                    warn!("queue socket overrun: the kernel dropped queued messages");
                    continue;
                }
                Err(e) => return Err(e),
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
                        continue;
                    }
                };
                handled += 1;
                let outcome = examine(&self.slots, &pkt);
                let mut help = None;
                let mut attached = None;
                let mut verdict_code = queue::NF_ACCEPT;
                let mut rewritten_len = None;
                match &outcome {
                    Ok(ex) => {
                        let slot = &mut self.slots[ex.slot];
                        let mut ctl = Ctl {
                            sock: &mut self.ctl_sock,
                            buf: &mut self.bufs.ctl,
                            rx: &mut self.bufs.ctl_rx,
                        };
                        let applied = Self::apply(slot, ex, &mut ctl);
                        attached = applied.attached;
                        let mut private_written = false;
                        if !ex.action.rewrites.is_empty() {
                            let t = Self::translate(
                                slot,
                                ex,
                                &applied,
                                pkt.payload,
                                &mut self.bufs.mangle,
                                &mut ctl,
                            );
                            if t.drop {
                                verdict_code = queue::NF_DROP;
                            }
                            rewritten_len = t.len;
                            private_written = t.private_written;
                        }
                        if ex.action.private_changed && !private_written {
                            help = Some(queue::HelpUpdate {
                                helper_name: self.slots[ex.slot].name,
                                info: &ex.private[..ex.private_len],
                            });
                        }
                    }
                    Err(skip) => {
                        self.unhandled += 1;
                        debug!("packet {} passed without help: {skip:?}", pkt.id);
                    }
                }
                let verdict = queue::Verdict {
                    queue: pkt.queue,
                    id: pkt.id,
                    verdict: verdict_code,
                    help,
                    expectation: attached.as_ref(),
                    payload: rewritten_len.and_then(|n| self.bufs.mangle.get(..n)),
                };
                let seq = self.queue_sock.next_seq();
                let mut w = Writer::new(&mut self.bufs.tx[tx_len..]);
                if queue::write_verdict(&mut w, seq, &verdict).is_err() {
                    // Batch full: flush and write again at the start.
                    self.queue_sock.send(&self.bufs.tx[..tx_len])?;
                    let mut w = Writer::new(&mut self.bufs.tx[..]);
                    queue::write_verdict(&mut w, seq, &verdict)?;
                    tx_len = w.len();
                } else {
                    tx_len += w.len();
                }
            }
        }
        if tx_len > 0 {
            self.queue_sock.send(&self.bufs.tx[..tx_len])?;
        }
        Ok(handled)
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
                    "{}: unparsable payload on {} -> {}:{}",
                    slot.name,
                    ex.conntrack.orig.src,
                    ex.conntrack.orig.dst,
                    ex.conntrack.orig.dst_port
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
            let mut exp = *exp;
            let mut attempts = 1;
            // A NAT expectation is created exclusively so that a port another master
            // holds is seen (write_exp_new); one this master already holds is refreshed.
            let mut exclusive = exp.nat.is_some();
            let result = loop {
                let result = ctl.request(
                    |w, seq| {
                        ctnetlink::write_exp_new(
                            w,
                            seq,
                            &exp,
                            &ex.conntrack.orig,
                            ex.conntrack.zone,
                            exclusive,
                        )
                    },
                    |_| {},
                );
                match result {
                    Err(e)
                        if exclusive
                            && e.errno() == Some(Errno::EEXIST)
                            && Self::expectation_master(ctl, &exp, ex.conntrack.zone)
                                == Some(ex.conntrack.orig) =>
                    {
                        // Ours (a repeated or retransmitted announcement): keep its
                        // port, as the kernel does, and refresh it.
                        exclusive = false;
                    }
                    Err(e)
                        if matches!(e.errno(), Some(Errno::EBUSY | Errno::EEXIST))
                            && exp.nat.is_some()
                            && attempts < NAT_PORT_ATTEMPTS
                            && exp.dst_port < u16::MAX =>
                    {
                        attempts += 1;
                        exp.dst_port += 1;
                        exclusive = true;
                    }
                    other => break other,
                }
            };
            match result {
                Ok(()) => {
                    slot.stats.expectations += 1;
                    applied.ports[i] = Some(exp.dst_port);
                    debug!(
                        "{}: expecting {} {} -> {}:{}{}",
                        slot.name,
                        exp.proto,
                        exp.src,
                        exp.dst,
                        exp.dst_port,
                        NatNote(&exp)
                    );
                }
                Err(e) => {
                    slot.stats.expectation_errors += 1;
                    if !slot.log_limit.allow(std::time::Instant::now(), slot.name) {
                        continue;
                    }
                    // The first port the search tried (no allocation on the packet path).
                    let first = exp.dst_port + 1 - attempts;
                    warn!(
                        "{}: cannot create expectation {} -> {}:{} (ports tried from {first}): {e}",
                        slot.name, exp.src, exp.dst, exp.dst_port
                    );
                }
            }
        }
        applied
    }

    /// The master (original tuple) of the pending expectation with `exp`'s tuple, if
    /// the kernel has one.
    fn expectation_master(
        ctl: &mut Ctl<'_>,
        exp: &crate::conntrack::Expectation,
        zone: Option<u16>,
    ) -> Option<crate::conntrack::Tuple> {
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
                slot.rewrite_failed(format_args!(
                    "cannot rewrite an announcement of {master} for NAT: {e}; packet passed unchanged"
                ));
                Rewritten::Unchanged
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
        let mut t = Translated {
            drop: false,
            len: None,
            private_written: false,
        };
        match Self::rewrite(slot, ex, applied, packet, mangle) {
            Rewritten::Packet(len) => t.len = Some(len),
            Rewritten::Unchanged => return t,
            Rewritten::Drop => {
                t.drop = true;
                return t;
            }
        }
        if t.len != Some(packet.len()) && ex.conntrack.orig.src.is_ipv6() {
            let delta = t.len.unwrap_or(0) as i64 - packet.len() as i64;
            match Self::adjust_sequence(slot, ex, delta, ctl) {
                Ok(()) => t.private_written = true,
                Err(e) => {
                    t.len = None;
                    slot.rewrite_failed(format_args!(
                        "cannot set the sequence adjustment of {}: {e}; packet passed unchanged",
                        Endpoints(&ex.conntrack.orig)
                    ));
                    return t;
                }
            }
        }
        slot.stats.rewritten += 1;
        t
    }
}

/// The control socket and its buffers, borrowed apart from the rest of the daemon so the
/// packet path can use them while a helper slot is borrowed too.
struct Ctl<'a> {
    sock: &'a mut Socket,
    buf: &'a mut [u8],
    rx: &'a mut [u8],
}

impl Ctl<'_> {
    /// Send one request built by `build` (given the sequence number) and wait for its
    /// ACK; `on_reply` sees any other message answering it.
    fn request(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
        on_reply: impl FnMut(&crate::netlink::msg::Message<'_>),
    ) -> Result<(), IoError> {
        let seq = self.sock.next_seq();
        let mut w = Writer::new(self.buf);
        build(&mut w, seq)?;
        let len = w.len();
        self.sock.transact(&self.buf[..len], seq, self.rx, on_reply)
    }
}

/// What `translate` decided for a packet.
struct Translated {
    drop: bool,
    /// The rewritten packet's length in the mangle buffer, if it is to be sent.
    len: Option<usize>,
    /// The private data went out over ctnetlink (the verdict must not carry it).
    private_written: bool,
}

/// What `apply` did with a packet's expectations.
struct Applied {
    /// The expectation to attach to the verdict (unconfirmed master).
    attached: Option<crate::conntrack::Expectation>,
    /// The port each expectation got, by index; None where it could not be created.
    ports: [Option<u16>; MAX_EXPECTATIONS_PER_PACKET],
}

/// What to send back for a packet with announcements to rewrite.
enum Rewritten {
    /// The rewritten packet, `bufs.mangle[..len]`.
    Packet(usize),
    /// The original packet (already right, or could not be rewritten).
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
        examine(slots, &pkt)
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
        let ex = examine(&slots, &pkt).unwrap();
        let exp = ex.action.expectations[0];
        assert_eq!(exp.dst, core::net::IpAddr::from([192, 0, 2, 1]));
        assert!(exp.nat.is_some());
        let mut out = [0u8; 2048];
        let slot = &mut slots[ex.slot];
        let got = Daemon::rewrite(slot, &ex, &applied(Some(40001)), pkt.payload, &mut out);
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
            Daemon::rewrite(slot, &ex, &applied(None), pkt.payload, &mut out),
            Rewritten::Drop
        ));
        assert_eq!(slot.stats.rewrite_errors, 1);

        // A buffer too small for the packet: it passes unchanged, counted.
        let mut tiny = [0u8; 40];
        assert!(matches!(
            Daemon::rewrite(slot, &ex, &applied(Some(40001)), pkt.payload, &mut tiny),
            Rewritten::Unchanged
        ));
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
            Daemon::rewrite(slot, &ex_same, &applied(Some(40000)), pkt.payload, &mut out),
            Rewritten::Unchanged
        ));
        assert_eq!(slot.stats.rewrite_errors, 2);
    }
}
