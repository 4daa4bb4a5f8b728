//! The configured helpers as the daemon runs them: one slot per enabled helper section,
//! with its counters and a log-line budget.

use log::warn;

use crate::config::{ClassLimits, Config, Families, Protos};
use crate::helpers::registry::Builtin;

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

/// Counters of one helper (`cthelperd status`, the final log line).
pub type Stats = crate::status::HelperCounters;

/// One configured helper as the daemon runs it: registered for each of its families and
/// protocols, all served from one queue.
pub struct Slot {
    pub name: &'static str,
    /// Its registry entry (classes, private-data length, code).
    pub builtin: &'static Builtin,
    pub families: Families,
    pub protos: Protos,
    pub queue: u16,
    /// The configured limits of each expectation class.
    pub classes: ClassLimits,
    /// What the helper is told about its configuration (`allow_low_ports`).
    pub policy: crate::helpers::Policy,
    pub stats: Stats,
    pub log_limit: LogLimit,
    /// The helper's own bounded store (helpers/store.rs), kept across reloads.
    pub store: crate::helpers::Store,
}

impl Slot {
    /// Its line of `cthelperd status`.
    pub fn status_line(&self) -> crate::status::HelperLine<'static> {
        crate::status::HelperLine {
            name: self.name,
            families: self.families,
            protos: self.protos,
            queue: self.queue,
            counters: self.stats,
            store_evictions: self.store.evictions,
            streams: self
                .store
                .streams
                .as_ref()
                .map(|p| crate::status::StreamCounters {
                    overflows: p.overflows,
                    lost: p.lost,
                }),
        }
    }

    /// Whether a packet queued to `queue` for helper `name` on a connection of L4
    /// protocol `proto` is this slot's.
    pub fn serves(&self, name: &str, queue: u16, proto: u8) -> bool {
        self.name == name && self.queue == queue && self.protos.contains(proto)
    }

    /// The configured timeout of expectation class `class` (the first class's for an
    /// index the helper does not have; the kernel refuses such an expectation anyway).
    pub fn expect_timeout(&self, class: u32) -> u32 {
        let classes = self.classes.as_slice();
        usize::try_from(class)
            .ok()
            .and_then(|c| classes.get(c))
            .or(classes.first())
            .map_or(0, |l| l.expect_timeout)
    }

    /// Count an announcement that needed a NAT rewrite and did not get one, and log
    /// why (rate-limited, like every per-packet line).
    pub(super) fn rewrite_failed(&mut self, why: core::fmt::Arguments<'_>) {
        self.stats.rewrite_errors += 1;
        if self.log_limit.allow(std::time::Instant::now(), self.name) {
            warn!("{}: {why}", self.name);
        }
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
        let slot = Slot {
            name: h.name(),
            builtin: h.builtin,
            families: h.families,
            protos: h.protos,
            queue: cfg.queue_of(index),
            classes: h.classes,
            policy: h.policy(),
            stats: Stats::default(),
            log_limit: LogLimit::new(),
            store: crate::helpers::Store::for_helper(h.builtin),
        };
        if slots.push(slot).is_err() {
            return Err("too many helpers".into());
        }
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_serves_its_protocols_and_knows_each_class_timeout() {
        use crate::helpers::registry::test_entry;
        use crate::model::{IPPROTO_TCP, IPPROTO_UDP};
        let cfg = Config::parse(
            &format!(
                "config helper\n\toption name '{}'\n\toption proto 'udp'\n\toption expect_timeout_audio '30'\n",
                test_entry::NAME
            ),
            "t",
        )
        .unwrap();
        let slots = slots_from_config(&cfg).unwrap();
        let s = &slots[0];
        let q = cfg.queue_of(0);
        assert!(s.serves(test_entry::NAME, q, IPPROTO_UDP));
        assert!(
            !s.serves(test_entry::NAME, q, IPPROTO_TCP),
            "restricted to udp"
        );
        assert!(!s.serves(test_entry::NAME, q + 1, IPPROTO_UDP));
        assert!(!s.serves("ftp", q, IPPROTO_UDP));
        assert_eq!(s.expect_timeout(test_entry::AUDIO), 30);
        assert_eq!(s.expect_timeout(0), 180);
        assert_eq!(
            s.expect_timeout(99),
            180,
            "an unknown class: the first one's"
        );
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

    #[test]
    fn a_helper_gets_a_store_table_only_when_its_registry_entry_asks() {
        use crate::helpers::{STORE_ENTRIES, StoreKey, registry};
        let slots = slots_from_config(&Config::default()).unwrap();
        assert!(
            slots[..2].iter().all(|s| s.store.capacity() == 0),
            "FTP, TFTP"
        );
        assert_eq!(slots[2].name, "sip");
        assert_eq!(slots[2].store.capacity(), STORE_ENTRIES);
        assert!(slots[2].store.streams.is_some());
        let text = format!(
            "config helper 'voice'\n\toption name '{}'\n",
            registry::test_entry::NAME
        );
        let cfg = Config::parse(&text, "/etc/config/cthelperd").unwrap();
        let mut slots = slots_from_config(&cfg).unwrap();
        let slot = slots
            .iter_mut()
            .find(|s| s.name == registry::test_entry::NAME)
            .unwrap();
        assert_eq!(slot.store.capacity(), STORE_ENTRIES);
        for tag in 0..=STORE_ENTRIES as u64 {
            let key = StoreKey { conntrack: 1, tag };
            slot.store.insert(key, b"dialog").unwrap();
        }
        // What `status` reports as the helper's store_evictions.
        assert_eq!(slot.store.evictions, 1);
    }
}
