//! SIGHUP: what has to change in the kernel to go from one configuration to the
//! next. A pure function (old, new) -> actions, so that the diff is tested without
//! a kernel; the daemon executes the actions in order.

use crate::config::{ClassLimits, Config, HelperConfig};
use crate::model::Family;

/// One registration as the kernel keys it: name and tuple (family, protocol). A helper
/// section gives one per family and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub family: Family,
    pub proto: u8,
}

/// What a registration carries besides its key (the policy names and the private-data
/// length come from the registry and cannot change while the daemon runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub queue: u16,
    /// The limits of each expectation class, one policy each.
    pub classes: ClassLimits,
    /// Who sends the helper's packets to its queue.
    pub queued_by: QueuedBy,
}

/// Who sends a helped connection's packets to the helper's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuedBy {
    /// The kernel's helper hook, which queues every packet of a helped connection (pure
    /// ACKs, SYNs and FINs too): the helper is registered enabled. For `firewall '0'`,
    /// where the owner's own rules assign the helpers.
    HelperHook,
    /// `table inet cthelperd`, which queues only the packets that carry payload: the
    /// helper is registered disabled, so that its hook lets every packet through, and
    /// stays attached to the connections for expectations and private data.
    Ruleset,
}

impl QueuedBy {
    pub fn of(cfg: &Config) -> Self {
        if cfg.firewall {
            QueuedBy::Ruleset
        } else {
            QueuedBy::HelperHook
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Bind a queue that was not bound before (before anything is sent to it).
    BindQueue(u16),
    /// Re-send length and fail-open of a queue that stays bound.
    QueueParams(u16),
    /// NEW: create the helper, or update queue and policy of an existing one and
    /// enable it. (A changed policy shape would need DEL + NEW; the daemon falls
    /// back to that on EBUSY.)
    Register(Key, Settings),
    /// Replace `table inet cthelperd` (after the registrations it names).
    Firewall,
    /// Remove `table inet cthelperd` (`firewall '0'` now).
    RemoveFirewall,
    /// STATUS 0, not DEL: an nft `ct helper` object may still reference it (DEL
    /// would fail with EBUSY) and the kernel skips a disabled helper.
    Disable(Key),
    /// Answer the packets still waiting on queues about to be unbound.
    Drain,
    /// Unbind a queue nothing uses any more.
    UnbindQueue(u16),
    /// Log level from the file (unless the command line set one).
    LogLevel(log::LevelFilter),
}

/// The registrations a configuration asks for, in helper order.
pub fn registrations(cfg: &Config) -> Vec<(Key, Settings)> {
    let mut out = Vec::new();
    if !cfg.enabled {
        return out;
    }
    for (i, h) in cfg.helpers.iter().enumerate() {
        if !h.enabled {
            continue;
        }
        for family in h.families.iter() {
            for proto in h.protos.iter() {
                out.push((key(h, family, proto), settings(cfg, i, h)));
            }
        }
    }
    out
}

fn key(h: &HelperConfig, family: Family, proto: u8) -> Key {
    Key {
        name: h.name(),
        family,
        proto,
    }
}

fn settings(cfg: &Config, index: usize, h: &HelperConfig) -> Settings {
    Settings {
        queue: cfg.queue_of(index),
        classes: h.classes,
        queued_by: QueuedBy::of(cfg),
    }
}

/// The queues a configuration binds, ascending, without duplicates.
pub fn queues(cfg: &Config) -> Vec<u16> {
    let mut q: Vec<u16> = registrations(cfg).iter().map(|(_, s)| s.queue).collect();
    q.sort_unstable();
    q.dedup();
    q
}

/// Actions taking the kernel from `old` (running) to `new`, in execution order:
/// new queues first (a helper must never point at an unbound queue), then the removal
/// of a table that goes, registrations, the firewall table (which may name
/// just-registered helpers), disabling, and unbinding queues nothing points at any
/// more. Unchanged helpers get no action, so their packets keep flowing untouched.
pub fn plan(old: &Config, new: &Config, cli_log_level: bool) -> Vec<Action> {
    let mut actions = Vec::new();
    if !cli_log_level && old.log_level != new.log_level {
        actions.push(Action::LogLevel(new.log_level));
    }
    let (old_regs, new_regs) = (registrations(old), registrations(new));
    let (old_q, new_q) = (queues(old), queues(new));
    for q in &new_q {
        if !old_q.contains(q) {
            actions.push(Action::BindQueue(*q));
        }
    }
    if (old.queue_maxlen, old.fail_open) != (new.queue_maxlen, new.fail_open) {
        for q in new_q.iter().filter(|q| old_q.contains(q)) {
            actions.push(Action::QueueParams(*q));
        }
    }
    let firewall_goes = !(new.enabled && new.firewall) && old.enabled && old.firewall;
    if firewall_goes {
        // Before the registrations: a helper switched back to queueing from its hook
        // while the table still queues would see each packet twice.
        actions.push(Action::RemoveFirewall);
    }
    for (k, s) in &new_regs {
        if !old_regs.contains(&(*k, *s)) {
            actions.push(Action::Register(*k, *s));
        }
    }
    if new.enabled && new.firewall {
        // Always: cheap, atomic, and it repairs a table someone deleted by hand.
        actions.push(Action::Firewall);
    }
    for (k, _) in &old_regs {
        if !new_regs.iter().any(|(n, _)| n == k) {
            actions.push(Action::Disable(*k));
        }
    }
    let unbind: Vec<u16> = old_q
        .iter()
        .copied()
        .filter(|q| !new_q.contains(q))
        .collect();
    if !unbind.is_empty() {
        actions.push(Action::Drain);
        actions.extend(unbind.into_iter().map(Action::UnbindQueue));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Families;
    use crate::helpers::registry::test_entry;
    use crate::model::{IPPROTO_TCP, IPPROTO_UDP};

    fn ftp(f: Family) -> Key {
        Key {
            name: "ftp",
            family: f,
            proto: IPPROTO_TCP,
        }
    }
    fn tftp(f: Family) -> Key {
        Key {
            name: "tftp",
            family: f,
            proto: IPPROTO_UDP,
        }
    }
    /// The default queue base: ftp takes queue Q, tftp Q + 1.
    const Q: u16 = crate::config::DEFAULT_QUEUE_BASE;

    /// The default configuration without SIP: FTP on queue Q, TFTP on Q + 1 (the tests
    /// add the registry's SIP-shaped test entry as the third helper where they need one).
    fn ftp_tftp() -> Config {
        let mut c = Config::default();
        c.helpers.retain(|h| h.name() != "sip");
        c
    }

    /// Settings of a helper with one expectation class (FTP, TFTP).
    fn s(queue: u16, expect_max: u32, expect_timeout: u32) -> Settings {
        let mut classes = ClassLimits::defaults(&crate::helpers::registry::FTP);
        classes[0] = crate::config::Limits {
            expect_max,
            expect_timeout,
        };
        Settings {
            queue,
            classes,
            queued_by: QueuedBy::Ruleset,
        }
    }

    #[test]
    fn same_configuration_only_refreshes_the_firewall() {
        let c = ftp_tftp();
        assert_eq!(plan(&c, &c, false), vec![Action::Firewall]);
        let mut off = c.clone();
        off.firewall = false;
        assert_eq!(plan(&off, &off, false), vec![]);
    }

    #[test]
    fn changed_helper_policy_needs_no_kernel_message() {
        // allow_low_ports lives in the daemon's slots (installed on every reload), not in
        // the kernel registration.
        let old = ftp_tftp();
        let mut new = old.clone();
        new.helpers[0].allow_low_ports = true;
        assert_eq!(plan(&old, &new, false), vec![Action::Firewall]);
    }

    #[test]
    fn changed_expect_timeout_updates_that_helper_only() {
        let old = ftp_tftp();
        let mut new = old.clone();
        new.helpers[0].classes[0].expect_timeout = 120;
        assert_eq!(
            plan(&old, &new, false),
            vec![
                Action::Register(ftp(Family::Ipv4), s(Q, 1, 120)),
                Action::Register(ftp(Family::Ipv6), s(Q, 1, 120)),
                Action::Firewall,
            ]
        );
    }

    /// FTP and TFTP plus a section for the registry's SIP-shaped test entry
    /// (tcp+udp, four classes), which takes queue Q + 2.
    fn with_sip(body: &str) -> Config {
        let text = format!(
            "{}\nconfig helper\n\toption name '{}'\n{body}",
            ftp_tftp().to_uci(),
            test_entry::NAME
        );
        Config::parse(&text, "t").unwrap()
    }
    fn sip(family: Family, proto: u8) -> Key {
        Key {
            name: test_entry::NAME,
            family,
            proto,
        }
    }
    /// Settings of the SIP-shaped entry: queue Q + 2, its default limits but `audio_max`.
    fn sip_settings(audio_max: u32) -> Settings {
        let mut classes = ClassLimits::defaults(&test_entry::SIPMOCK);
        classes[test_entry::AUDIO as usize].expect_max = audio_max;
        Settings {
            queue: Q + 2,
            classes,
            queued_by: QueuedBy::Ruleset,
        }
    }
    const SIP_KEYS: [(Family, u8); 4] = [
        (Family::Ipv4, IPPROTO_TCP),
        (Family::Ipv4, IPPROTO_UDP),
        (Family::Ipv6, IPPROTO_TCP),
        (Family::Ipv6, IPPROTO_UDP),
    ];

    #[test]
    fn a_helper_on_two_protocols_is_registered_per_family_and_protocol() {
        let old = ftp_tftp();
        let new = with_sip("");
        let mut expected = vec![Action::BindQueue(Q + 2)];
        for (f, p) in SIP_KEYS {
            expected.push(Action::Register(sip(f, p), sip_settings(4)));
        }
        expected.push(Action::Firewall);
        assert_eq!(plan(&old, &new, false), expected);
    }

    #[test]
    fn a_changed_class_limit_updates_every_registration_of_that_helper() {
        let old = with_sip("");
        let mut new = old.clone();
        new.helpers[2].classes[test_entry::AUDIO as usize].expect_max = 8;
        let mut expected: Vec<Action> = SIP_KEYS
            .iter()
            .map(|&(f, p)| Action::Register(sip(f, p), sip_settings(8)))
            .collect();
        expected.push(Action::Firewall);
        assert_eq!(plan(&old, &new, false), expected);
        // the same through the file's spelling
        assert_eq!(
            plan(&old, &with_sip("\toption expect_max_audio '8'\n"), false),
            expected
        );
    }

    #[test]
    fn a_protocol_removed_is_disabled_and_one_added_is_registered() {
        let both = with_sip("");
        let udp = with_sip("\toption proto 'udp'\n");
        assert_eq!(
            plan(&both, &udp, false),
            vec![
                Action::Firewall,
                Action::Disable(sip(Family::Ipv4, IPPROTO_TCP)),
                Action::Disable(sip(Family::Ipv6, IPPROTO_TCP)),
            ],
            "the udp registrations and the queue stay untouched"
        );
        assert_eq!(
            plan(&udp, &both, false),
            vec![
                Action::Register(sip(Family::Ipv4, IPPROTO_TCP), sip_settings(4)),
                Action::Register(sip(Family::Ipv6, IPPROTO_TCP), sip_settings(4)),
                Action::Firewall,
            ]
        );
    }

    #[test]
    fn disabling_a_helper_disables_it_and_unbinds_its_queue() {
        let old = ftp_tftp();
        let mut new = old.clone();
        new.helpers[1].enabled = false;
        assert_eq!(
            plan(&old, &new, false),
            vec![
                Action::Firewall,
                Action::Disable(tftp(Family::Ipv4)),
                Action::Disable(tftp(Family::Ipv6)),
                Action::Drain,
                Action::UnbindQueue(Q + 1),
            ]
        );
        // and back: bind before register, register before the firewall
        assert_eq!(
            plan(&new, &old, false),
            vec![
                Action::BindQueue(Q + 1),
                Action::Register(tftp(Family::Ipv4), s(Q + 1, 1, 300)),
                Action::Register(tftp(Family::Ipv6), s(Q + 1, 1, 300)),
                Action::Firewall,
            ]
        );
    }

    #[test]
    fn family_change_registers_and_disables_per_family() {
        let old = ftp_tftp();
        let mut new = old.clone();
        new.helpers[0].families = Families::Ipv6;
        assert_eq!(
            plan(&old, &new, false),
            vec![Action::Firewall, Action::Disable(ftp(Family::Ipv4))]
        );
        assert_eq!(
            plan(&new, &old, false),
            vec![
                Action::Register(ftp(Family::Ipv4), s(Q, 1, 300)),
                Action::Firewall
            ]
        );
    }

    #[test]
    fn queue_base_change_moves_every_helper() {
        let old = ftp_tftp();
        let mut new = old.clone();
        new.queue_base = Q + 1;
        assert_eq!(
            plan(&old, &new, false),
            vec![
                Action::BindQueue(Q + 2),
                Action::Register(ftp(Family::Ipv4), s(Q + 1, 1, 300)),
                Action::Register(ftp(Family::Ipv6), s(Q + 1, 1, 300)),
                Action::Register(tftp(Family::Ipv4), s(Q + 2, 1, 300)),
                Action::Register(tftp(Family::Ipv6), s(Q + 2, 1, 300)),
                Action::Firewall,
                Action::Drain,
                Action::UnbindQueue(Q),
            ]
        );
    }

    #[test]
    fn queue_parameters_log_level_firewall_and_global_switch() {
        let old = ftp_tftp();
        let mut new = old.clone();
        new.queue_maxlen = 4096;
        new.log_level = log::LevelFilter::Debug;
        new.firewall = false;
        let p = plan(&old, &new, false);
        assert_eq!(
            &p[..4],
            &[
                Action::LogLevel(log::LevelFilter::Debug),
                Action::QueueParams(Q),
                Action::QueueParams(Q + 1),
                Action::RemoveFirewall,
            ]
        );
        // Without the table, the helpers' hooks queue again.
        assert_eq!(p.len(), 8);
        for a in &p[4..] {
            assert!(
                matches!(a, Action::Register(_, s) if s.queued_by == QueuedBy::HelperHook),
                "{a:?}"
            );
        }
        // a log level given on the command line wins over the file
        assert!(!plan(&old, &new, true).contains(&Action::LogLevel(log::LevelFilter::Debug)));
        let mut off = old.clone();
        off.enabled = false;
        let p = plan(&old, &off, false);
        assert_eq!(p[0], Action::RemoveFirewall);
        assert_eq!(
            p.iter().filter(|a| matches!(a, Action::Disable(_))).count(),
            4
        );
        assert_eq!(
            &p[5..],
            &[
                Action::Drain,
                Action::UnbindQueue(Q),
                Action::UnbindQueue(Q + 1)
            ]
        );
    }
    /// With the table, the table queues and the helpers are registered disabled;
    /// switching the table off removes it before the helpers' hooks queue again (never
    /// both at once, or each packet would be queued twice), and switching it on
    /// registers them disabled before the table queues (a moment with neither).
    #[test]
    fn the_table_or_the_helper_hook_queues_never_both() {
        let on = ftp_tftp();
        assert!(
            registrations(&on)
                .iter()
                .all(|(_, s)| s.queued_by == QueuedBy::Ruleset)
        );
        let mut off = on.clone();
        off.firewall = false;
        assert!(
            registrations(&off)
                .iter()
                .all(|(_, s)| s.queued_by == QueuedBy::HelperHook)
        );
        let p = plan(&on, &off, false);
        assert_eq!(p[0], Action::RemoveFirewall);
        assert_eq!(p.len(), 5, "{p:?}");
        let p = plan(&off, &on, false);
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(
            p[..4]
                .iter()
                .all(|a| matches!(a, Action::Register(_, s) if s.queued_by == QueuedBy::Ruleset))
        );
        assert_eq!(p[4], Action::Firewall);
    }
}
