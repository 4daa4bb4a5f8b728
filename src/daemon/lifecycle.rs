//! Start (sockets, queues, registration, firewall), reload, stop and drain.

use std::os::fd::AsFd;

use log::{debug, error, info, warn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};

use super::kernel::{Ctl, queue_transact};
use super::slots::{LogLimit, Stats};
use super::{
    Buffers, CTL_BUF, DRAIN_TIME, Daemon, Options, PACKET_BUFS, PROCESS_START, QUEUE_RCVBUF, Slot,
    StartError, family_name, slots_from_config,
};
use crate::config::{Config, class_settings, proto_name};
use crate::firewall;
use crate::helpers::registry::{self, MAX_CLASSES, Protos};
use crate::lazy_buf::LazyBuf;
use crate::netlink::attr::Writer;
use crate::netlink::cthelper;
use crate::netlink::nftables;
use crate::netlink::queue;
use crate::netlink::socket::{IoError, Socket};
use crate::private_cache::PrivateCache;
use crate::reload;
use crate::status;

/// How long a request on the control socket waits for the kernel's answer. The kernel
/// answers within the send call; this only bounds a kernel that never does, which must
/// not stall the packet path for ever.
pub(super) const CTL_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Room for the text of /proc/net/netfilter/nfnetlink_queue (one line per bound queue).
const PROC_QUEUES_BUF: usize = 4096;

/// Room for the helper names in the "helpers registered" line: MAX_HELPERS names of at
/// most cthelper::NAME_MAX bytes, each with a ", " separator.
const REGISTERED_NAMES: usize = crate::config::MAX_HELPERS * (cthelper::NAME_MAX + ", ".len());

/// How many times binding a queue is tried when the kernel answers EAGAIN (loading the
/// conntrack glue module on the first request).
const BIND_ATTEMPTS: u32 = 3;

/// How logs name one registration: its family, and its protocol too when the helper runs
/// on several ("ipv4", "ipv6 udp"), so that a single-protocol helper's lines stay as they
/// were.
pub(super) fn registration_label(key: &reload::Key) -> String {
    let family = family_name(key.family);
    match registry::find(key.name) {
        Some(b) if b.protos.len() > 1 => format!("{family} {}", proto_name(key.proto)),
        _ => family.into(),
    }
}

/// NEW for one family and protocol on the control socket: creates the helper or updates
/// an existing one in place, with one policy per expectation class of its registry entry.
pub(super) fn register_with(
    ctl: &mut Ctl<'_>,
    key: reload::Key,
    settings: reload::Settings,
) -> Result<(), StartError> {
    let reload::Key {
        name,
        family,
        proto,
    } = key;
    let label = registration_label(&key);
    let builtin = registry::find(name).ok_or_else(|| StartError {
        what: format!("no built-in helper named {name:?}"),
        cause: None,
    })?;
    let queue = settings.queue;
    let private_len = builtin.private_len as u32;
    let mut policies: heapless::Vec<cthelper::ExpectPolicy<'static>, MAX_CLASSES> =
        heapless::Vec::new();
    for (class, limits) in builtin.classes.iter().zip(settings.classes.as_slice()) {
        let _ = policies.push(cthelper::ExpectPolicy {
            name: class.name,
            max_expected: limits.expect_max,
            timeout_secs: limits.expect_timeout,
        });
    }
    let reg = cthelper::Registration {
        name,
        family,
        l4proto: proto,
        queue,
        policies: &policies,
        private_len,
        // Disabled, the kernel's helper hook lets every packet through (the table
        // queues those with payload) but the helper stays the connections' helper.
        enabled: settings.queued_by == reload::QueuedBy::HelperHook,
    };
    let mut result = ctl.request(|w, seq| cthelper::write_new(w, seq, &reg), |_| {});
    if result.as_ref().err().and_then(|e| e.errno()) == Some(Errno::EBUSY) {
        // A helper of this name exists with another private-data size or policy shape
        // (policy count or names: an older version of us, or conntrackd). The kernel
        // cannot update that in place: replace it. Connections it was helping lose
        // their helper.
        warn!("helper {name} ({label}) exists with an incompatible layout; replacing it");
        let _ = ctl.request(
            |w, seq| cthelper::write_del(w, seq, name, family, proto),
            |_| {},
        );
        result = ctl.request(|w, seq| cthelper::write_new(w, seq, &reg), |_| {});
    }
    result.map_err(|cause| StartError {
        what: format!(
            "cannot register helper {name} ({label}){}",
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
        "registered helper {name} {} proto {proto} queue {queue} ({}) private {private_len} bytes, {} policies",
        family_name(family),
        match settings.queued_by {
            reload::QueuedBy::HelperHook => "queued by its hook",
            reload::QueuedBy::Ruleset => "queued by the table",
        },
        policies.len()
    );
    Ok(())
}

/// Is the kernel's table the one `script` loads? Its comment says which script loaded
/// it ([`firewall::comment`]). No table, a table without comment (kernels before 5.10
/// drop it) or any error: no, and nft runs as on a first start.
pub(super) fn table_is_current(ctl: &mut Ctl<'_>, script: &str) -> bool {
    let Some(want) = firewall::comment(script) else {
        return false;
    };
    let mut found = false;
    let asked = ctl.request(
        |w, seq| nftables::write_get_table(w, seq, firewall::TABLE_FAMILY, firewall::TABLE_NAME),
        |msg| {
            found |= nftables::parse_table(msg)
                .is_ok_and(|t| t.name == firewall::TABLE_NAME && t.comment == Some(want));
        },
    );
    asked.is_ok() && found
}

/// The signals the daemon handles through its signalfd: stop, stop, reload, log counters.
pub(super) fn handled_signals() -> SigSet {
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

impl Buffers {
    /// All of them, allocated once at start.
    pub(super) fn new() -> Buffers {
        Buffers {
            packet: LazyBuf::zeroed(PACKET_BUFS),
            ctl: LazyBuf::zeroed(CTL_BUF),
            ctl_rx: LazyBuf::zeroed(CTL_BUF),
            report: vec![0u8; status::REPORT_MAX].into_boxed_slice(),
            proc_queues: vec![0u8; PROC_QUEUES_BUF].into_boxed_slice(),
        }
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
            bufs: Buffers::new(),
            opts,
            control: None,
            verdict_errors: 0,
            wakeups: 0,
            greedy_reads: false,
            firewall_pending: None,
            registered_ms: None,
            losses: super::losses::Losses::default(),
            losses_checked: None,
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
        d.check_holders()
            .map_err(|what| StartError { what, cause: None })?;
        for i in 0..d.slots.len() {
            d.register(i)?;
        }
        d.registered_ms = PROCESS_START.get().map(|t0| t0.elapsed().as_millis());
        if let Some(path) = d.opts.control_socket.clone() {
            // Status is a convenience: without it the helpers still work.
            match status::Server::bind(&path) {
                Ok(server) => d.control = Some(server),
                Err(e) => warn!("status socket disabled: {e}"),
            }
        }
        if d.cfg.firewall {
            let script = firewall::ruleset(&d.cfg);
            if table_is_current(&mut d.ctl(), &script) {
                // A restart after a crash (procd's respawn): the table the last run
                // loaded is there and is the one this configuration gives. Running
                // nft again would change nothing, and under load it takes the CPU
                // the first packets need.
                if let Some(t0) = PROCESS_START.get() {
                    info!(
                        "serving the queues {} ms after start; table {} kept (already loaded for this configuration)",
                        t0.elapsed().as_millis(),
                        firewall::TABLE
                    );
                }
                d.announce_ready();
                return Ok(d);
            }
            // The queues are served while nft runs (`run` finishes it): on a restart
            // after a crash the old table still assigns the helpers, and their packets
            // wait for us. nft refuses unknown helper names, so it runs after the
            // registration.
            match firewall::spawn(&d.opts.nft, &script) {
                Ok(p) => d.firewall_pending = Some(p),
                Err(what) => {
                    d.disable_helpers();
                    return Err(StartError { what, cause: None });
                }
            }
            if let Some(t0) = PROCESS_START.get() {
                info!(
                    "serving the queues {} ms after start; loading table {}",
                    t0.elapsed().as_millis(),
                    firewall::TABLE
                );
            }
        } else {
            d.announce_ready();
        }
        Ok(d)
    }

    /// The start's nft run is done: the table is loaded (say that everything is in
    /// place), or the error.
    pub(super) fn firewall_loaded(&mut self) -> Result<(), String> {
        let Some(pending) = self.firewall_pending.take() else {
            return Ok(());
        };
        pending.finish()?;
        info!("firewall: table {} loaded", firewall::TABLE);
        self.announce_ready();
        Ok(())
    }

    /// Wait for the start's nft run if it is still going (before a reload or stop
    /// runs nft again).
    pub(super) fn settle_firewall(&mut self) {
        if let Err(e) = self.firewall_loaded() {
            error!("{e}");
        }
    }

    /// Logged once everything is in place (the test harness waits for this line); the
    /// kernel registration itself and the firewall step (an nft process) are timed
    /// apart because only the first is ours to make fast.
    fn announce_ready(&self) {
        let names: heapless::String<REGISTERED_NAMES> =
            self.slots
                .iter()
                .fold(heapless::String::new(), |mut acc, s| {
                    if !acc.is_empty() {
                        let _ = acc.push_str(", ");
                    }
                    let _ = acc.push_str(s.name);
                    acc
                });
        match (self.registered_ms, PROCESS_START.get()) {
            (Some(reg), Some(t0)) => info!(
                "helpers registered: {names} (in the kernel {reg} ms after start, ready after {} ms)",
                t0.elapsed().as_millis()
            ),
            _ => info!("helpers registered: {names}"),
        }
    }

    /// The control socket with its buffers.
    pub(super) fn ctl(&mut self) -> Ctl<'_> {
        Ctl {
            link: &mut self.ctl_sock,
            buf: &mut self.bufs.ctl,
            rx: &mut self.bufs.ctl_rx,
        }
    }

    /// Send one ACKed request built by `build` on the control socket.
    pub(super) fn request(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
    ) -> Result<(), IoError> {
        self.ctl().request(build, |_| {})
    }

    /// The settings of queue `q`: GSO packets whole only when every helper on it runs
    /// on TCP alone (see [`queue::QueueConfig::gso`]).
    fn queue_config(&self, q: u16) -> queue::QueueConfig {
        let mut on_queue = self.slots.iter().filter(|s| s.queue == q).peekable();
        let gso = on_queue.peek().is_some() && on_queue.all(|s| s.protos == Protos::TCP);
        queue::QueueConfig {
            queue: q,
            max_len: self.cfg.queue_maxlen,
            fail_open: self.cfg.fail_open,
            gso,
        }
    }

    pub(super) fn bind_queue(&mut self, q: u16) -> Result<(), IoError> {
        let cfg = self.queue_config(q);
        // The queue belongs to the socket that binds it, so this goes on the queue
        // socket. Asking for conntrack data may load a module and answer EAGAIN once.
        let mut attempt = 0;
        loop {
            match self.queue_request(|w, seq| queue::write_bind(w, seq, &cfg)) {
                Err(e) if e.errno() == Some(Errno::EAGAIN) && attempt < BIND_ATTEMPTS => {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    pub(super) fn register(&mut self, i: usize) -> Result<(), StartError> {
        let s = &self.slots[i];
        let (name, protos, families) = (s.name, s.protos, s.families);
        let settings = reload::Settings {
            queue: s.queue,
            classes: s.classes,
            queued_by: reload::QueuedBy::of(&self.cfg),
        };
        for family in families.iter() {
            for proto in protos.iter() {
                self.register_one(
                    reload::Key {
                        name,
                        family,
                        proto,
                    },
                    settings,
                )?;
            }
        }
        Ok(())
    }

    /// NEW for one family and protocol (see [`register_with`]).
    pub(super) fn register_one(
        &mut self,
        key: reload::Key,
        settings: reload::Settings,
    ) -> Result<(), StartError> {
        register_with(&mut self.ctl(), key, settings)
    }

    pub(super) fn disable_one(&mut self, key: reload::Key) -> Result<(), IoError> {
        self.request(|w, seq| {
            cthelper::write_set_status(w, seq, key.name, key.family, key.proto, false)
        })
    }

    pub(super) fn queue_request(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
    ) -> Result<(), IoError> {
        // Queue configuration goes on the queue socket: a queue belongs to the
        // socket that bound it. Packets of queues already bound may arrive meanwhile
        // (a reload; helpers still registered after a crash): they are answered.
        let (rx, _, _) = super::packet_parts(&mut self.bufs.packet);
        let (result, strays) = queue_transact(&mut self.queue_sock, &mut self.bufs.ctl, rx, build);
        self.unhandled += strays;
        result
    }

    /// SIGHUP: re-read the file; refuse a bad one and keep running unchanged;
    /// otherwise apply only what changed (reload::plan).
    pub(super) fn reload(&mut self) {
        self.settle_firewall();
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
                    let qc = self.queue_config(q);
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
                            let limits: Vec<String> = registry::find(key.name)
                                .map(|b| class_settings(b, &settings.classes))
                                .unwrap_or_default()
                                .iter()
                                .map(|(option, value)| format!("{option} {value}"))
                                .collect();
                            info!(
                                "reload: helper {} ({}) {verb}: queue {} {}",
                                key.name,
                                registration_label(&key),
                                settings.queue,
                                limits.join(" ")
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
                            registration_label(&key)
                        )
                    })
                    .map_err(|e| {
                        format!(
                            "cannot disable helper {} ({}): {e}",
                            key.name,
                            registration_label(&key)
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

    /// Switch to the slots of a new configuration, keeping each helper's counters and store.
    pub(super) fn install_slots(
        &mut self,
        new: &heapless::Vec<Slot, { crate::config::MAX_HELPERS }>,
    ) {
        let mut slots: heapless::Vec<Slot, { crate::config::MAX_HELPERS }> = heapless::Vec::new();
        for n in new {
            let old = self.slots.iter_mut().find(|s| s.name == n.name);
            let _ = slots.push(Slot {
                name: n.name,
                builtin: n.builtin,
                families: n.families,
                protos: n.protos,
                queue: n.queue,
                classes: n.classes,
                policy: n.policy,
                stats: old.as_ref().map_or(Stats::default(), |o| o.stats),
                log_limit: LogLimit::new(),
                // The helper's dialogs outlive a reload.
                store: old.map_or_else(
                    || crate::helpers::Store::for_helper(n.builtin),
                    |o| core::mem::take(&mut o.store),
                ),
            });
        }
        self.slots = slots;
    }

    /// Switch every helper off (the kernel then passes their packets unqueued) and
    /// report failures; used on stop.
    pub(super) fn disable_helpers(&mut self) {
        for i in 0..self.slots.len() {
            let (name, protos, families) = (
                self.slots[i].name,
                self.slots[i].protos,
                self.slots[i].families,
            );
            for family in families.iter() {
                for proto in protos.iter() {
                    let key = reload::Key {
                        name,
                        family,
                        proto,
                    };
                    if let Err(e) = self.disable_one(key) {
                        error!(
                            "cannot disable helper {name} ({}): {e}",
                            registration_label(&key)
                        );
                    }
                }
            }
        }
    }

    /// Clean stop: disable the helpers and remove the table so the kernel stops
    /// queueing, answer what is already queued, then let the queue go with the socket
    /// (a packet still queued then would be dropped).
    pub(super) fn stop(&mut self) {
        self.settle_firewall();
        self.disable_helpers();
        // After disabling (the kernel skips the helpers, so nothing depends on the
        // table any more); before draining, as the table queues too. A failure is
        // logged; the stop is still clean.
        if self.cfg.enabled && self.cfg.firewall {
            match firewall::remove(&self.opts.nft) {
                Ok(()) => info!("firewall: table {} removed", firewall::TABLE),
                Err(e) => error!("cannot remove table {}: {e}", firewall::TABLE),
            }
        }
        self.drain();
        // Removes the socket file.
        self.control = None;
        self.log_stats();
        info!("helpers disabled, exiting");
    }

    /// Answer what is already queued: packets queued before a helper was disabled
    /// or moved still wait for a verdict; a short grace period catches those in
    /// flight on other CPUs.
    pub(super) fn drain(&mut self) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::kernel::fake::{FakeKernel, Reply};
    use crate::helpers::registry::test_entry;
    use crate::model::{Family, IPPROTO_TCP, IPPROTO_UDP};
    use crate::netlink::attr::Attr;
    use crate::netlink::msg::Messages;

    /// Register every key of `cfg` through `register_with` against `kernel`.
    fn register_all(kernel: &mut FakeKernel, cfg: &Config) -> Result<(), StartError> {
        let (mut buf, mut rx) = (vec![0u8; CTL_BUF], vec![0u8; CTL_BUF]);
        for (key, settings) in reload::registrations(cfg) {
            let mut ctl = Ctl {
                link: kernel,
                buf: &mut buf,
                rx: &mut rx,
            };
            register_with(&mut ctl, key, settings)?;
        }
        Ok(())
    }

    /// table_is_current against a kernel whose table inet cthelperd answers `reply`.
    fn current_with(script: &str, reply: impl Fn(u32) -> Reply + 'static) -> (bool, Vec<(u8, u8)>) {
        let mut kernel = FakeKernel::new(move |m| reply(m.header.seq));
        let (mut buf, mut rx) = (vec![0u8; CTL_BUF], vec![0u8; CTL_BUF]);
        let mut ctl = Ctl {
            link: &mut kernel,
            buf: &mut buf,
            rx: &mut rx,
        };
        let current = table_is_current(&mut ctl, script);
        (current, kernel.kinds())
    }

    /// A kernel whose table inet cthelperd has `comment` (None: no user data).
    fn table_with(comment: Option<&str>) -> impl Fn(u32) -> Reply + 'static {
        let udata = comment.map(nftables::comment_udata);
        move |seq| Reply::Then(nftables::table_message(seq, "cthelperd", udata.as_deref()))
    }

    #[test]
    fn a_table_is_kept_only_when_its_comment_names_this_script() {
        let script = firewall::ruleset(&Config::default());
        let want = firewall::comment(&script).unwrap();
        let get = vec![(nftables::SUBSYS, nftables::NFT_MSG_GETTABLE)];
        assert_eq!(
            current_with(&script, table_with(Some(want))),
            (true, get.clone())
        );
        // No table (a first start, or after a clean stop).
        let none = |_| Reply::Errno(Errno::ENOENT);
        assert_eq!(current_with(&script, none), (false, get));
        // Loaded for another configuration, or by hand without our comment, or by a
        // kernel that keeps no comments.
        let other = table_with(Some("cthelperd ruleset 0123456789abcdef"));
        assert!(!current_with(&script, other).0);
        assert!(!current_with(&script, table_with(None)).0);
        // A script that only removes the table asks nothing.
        let removal = firewall::ruleset(&Config {
            firewall: false,
            ..Config::default()
        });
        assert_eq!(
            current_with(&removal, table_with(Some(want))),
            (false, vec![])
        );
    }

    fn policy(name: &str, max_expected: u32, timeout_secs: u32) -> cthelper::ExpectPolicy<'_> {
        cthelper::ExpectPolicy {
            name,
            max_expected,
            timeout_secs,
        }
    }

    #[test]
    fn a_helper_with_four_classes_registers_four_policies_per_family_and_protocol() {
        let cfg = Config::parse(
            &format!(
                "config helper\n\toption name '{}'\n\toption expect_max_audio '8'\n\toption expect_timeout_image '60'\n",
                test_entry::NAME
            ),
            "t",
        )
        .unwrap();
        let mut kernel = FakeKernel::acking();
        register_all(&mut kernel, &cfg).unwrap();
        let sent = kernel.sent.borrow();
        let tuples: Vec<_> = sent
            .iter()
            .map(|d| {
                let msg = Messages::new(d).next().unwrap().unwrap();
                assert_eq!(
                    (msg.header.subsys(), msg.header.nf_msg()),
                    (
                        crate::netlink::subsys::CTHELPER,
                        cthelper::NFNL_MSG_CTHELPER_NEW
                    )
                );
                let info = cthelper::parse_helper(&msg).unwrap();
                assert_eq!(info.name, test_entry::NAME);
                assert_eq!((info.queue, info.private_len), (48000, 0));
                assert!(!info.enabled, "the table queues: its hook must not");
                assert_eq!(info.policy_count, 4);
                assert_eq!(
                    info.policies.as_slice(),
                    [
                        policy("signalling", 1, 180),
                        policy("audio", 8, 180),
                        policy("video", 4, 180),
                        policy("image", 2, 60),
                    ]
                );
                // The POLICY nest itself: SET_NUM, then SET1..SET4 and nothing else.
                let (_, attrs) = msg.nfnl().unwrap();
                let nest = attrs
                    .map(Result::unwrap)
                    .find(|a| a.kind == 4)
                    .unwrap()
                    .nested();
                let kinds: Vec<u16> = nest
                    .map(|a: crate::netlink::Result<Attr>| a.unwrap().kind)
                    .collect();
                assert_eq!(kinds, [1, 2, 3, 4, 5]);
                (info.family.unwrap(), info.l4proto)
            })
            .collect();
        assert_eq!(
            tuples,
            [
                (Family::Ipv4, IPPROTO_TCP),
                (Family::Ipv4, IPPROTO_UDP),
                (Family::Ipv6, IPPROTO_TCP),
                (Family::Ipv6, IPPROTO_UDP),
            ],
            "one NEW per family and protocol"
        );
    }

    /// With `firewall '0'` the owner's rules assign the helpers and no table queues:
    /// the helpers are registered enabled, so their hook queues.
    #[test]
    fn without_the_table_the_helpers_queue_from_their_hook() {
        for (firewall, enabled) in [(true, false), (false, true)] {
            let cfg = Config {
                firewall,
                ..Config::default()
            };
            let mut kernel = FakeKernel::acking();
            register_all(&mut kernel, &cfg).unwrap();
            let sent = kernel.sent.borrow();
            assert_eq!(sent.len(), 8);
            for d in sent.iter() {
                let msg = Messages::new(d).next().unwrap().unwrap();
                let info = cthelper::parse_helper(&msg).unwrap();
                assert_eq!(info.enabled, enabled, "firewall {firewall}: {}", info.name);
            }
        }
    }

    #[test]
    fn ftp_still_registers_one_policy_named_ftp() {
        let mut kernel = FakeKernel::acking();
        register_all(&mut kernel, &Config::default()).unwrap();
        let sent = kernel.sent.borrow();
        assert_eq!(
            sent.len(),
            8,
            "ftp, tftp and sip (TCP and UDP), IPv4 and IPv6"
        );
        let msg = Messages::new(&sent[0]).next().unwrap().unwrap();
        let info = cthelper::parse_helper(&msg).unwrap();
        assert_eq!(
            (info.name, info.l4proto, info.private_len),
            ("ftp", IPPROTO_TCP, 32)
        );
        assert_eq!(info.policies.as_slice(), [policy("ftp", 1, 300)]);
        let msg = Messages::new(&sent[3]).next().unwrap().unwrap();
        let info = cthelper::parse_helper(&msg).unwrap();
        assert_eq!(
            (info.name, info.family, info.l4proto, info.queue),
            ("tftp", Some(Family::Ipv6), IPPROTO_UDP, 48001)
        );
        assert_eq!(info.policies.as_slice(), [policy("tftp", 1, 300)]);
    }

    #[test]
    fn a_changed_policy_shape_falls_back_to_del_and_new() {
        // EBUSY: the kernel holds a helper of that name with another policy count.
        let mut first = true;
        let mut kernel = FakeKernel::new(move |m| {
            if m.header.nf_msg() == cthelper::NFNL_MSG_CTHELPER_NEW && first {
                first = false;
                Reply::Errno(Errno::EBUSY)
            } else {
                Reply::Ack
            }
        });
        let mut cfg = Config::default();
        cfg.helpers.truncate(1);
        cfg.helpers[0].families = crate::config::Families::Ipv4;
        register_all(&mut kernel, &cfg).unwrap();
        assert_eq!(
            kernel.kinds(),
            [
                (
                    crate::netlink::subsys::CTHELPER,
                    cthelper::NFNL_MSG_CTHELPER_NEW
                ),
                (
                    crate::netlink::subsys::CTHELPER,
                    cthelper::NFNL_MSG_CTHELPER_DEL
                ),
                (
                    crate::netlink::subsys::CTHELPER,
                    cthelper::NFNL_MSG_CTHELPER_NEW
                ),
            ]
        );
    }

    #[test]
    fn a_refused_registration_names_helper_family_and_protocol() {
        let mut kernel = FakeKernel::new(|_| Reply::Errno(Errno::EEXIST));
        let cfg = Config::parse(
            &format!(
                "config helper\n\toption name '{}'\n\toption proto 'udp'\n",
                test_entry::NAME
            ),
            "t",
        )
        .unwrap();
        let e = register_all(&mut kernel, &cfg).unwrap_err();
        assert!(
            e.what.starts_with(&format!(
                "cannot register helper {} (ipv4 udp)",
                test_entry::NAME
            )),
            "{e}"
        );
        // a single-protocol helper's messages name the family only, as before
        let mut kernel = FakeKernel::new(|_| Reply::Errno(Errno::EEXIST));
        let e = register_all(&mut kernel, &Config::default()).unwrap_err();
        assert!(
            e.what
                .starts_with("cannot register helper ftp (ipv4) (a kernel helper"),
            "{e}"
        );
    }
}
