//! Who already holds the helpers we are about to register. A NEW of an existing
//! user-space helper updates it in place, so registering would silently take a helper
//! from another process (conntrackd in helper mode, a second cthelperd): its packets
//! would come to our queue and it would never hear of them again. Before registering,
//! the daemon lists the kernel's user-space helpers and refuses to start when one of
//! ours is held by a process that still listens on its queue; one left behind by a
//! process that is gone (our own previous instance after a crash, on another queue)
//! is taken over with a note in the log.

use log::info;

use super::Daemon;
use super::kernel::Ctl;
use crate::model::Family;
use crate::netlink::cthelper;

/// Helpers one dump may list that we look at (the kernel's table holds every
/// user-space helper; a router has a handful).
const LISTED_MAX: usize = 32;

/// A helper the kernel already has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: heapless::String<16>,
    pub family: Option<Family>,
    pub proto: u8,
    pub queue: u32,
}

/// What an existing helper of one of our names means for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// None, or one on our own queue (ours from before: a restart, a reload).
    Free,
    /// On another queue that nobody listens on: its process is gone.
    Orphan { queue: u32 },
    /// On another queue that a process listens on.
    Foreign { queue: u32, portid: u32 },
}

/// Who holds helper `name` for `family`/`proto`, given the kernel's helpers and the
/// bound queues (queue number, listener's netlink port id) of
/// /proc/net/netfilter/nfnetlink_queue.
pub fn holder(
    listed: &[Listed],
    name: &str,
    family: Family,
    proto: u8,
    our_queue: u16,
    bound: &[(u32, u32)],
) -> Holder {
    let Some(h) = listed.iter().find(|h| {
        h.name.as_str() == name && h.proto == proto && h.family.is_none_or(|f| f == family)
    }) else {
        return Holder::Free;
    };
    if h.queue == u32::from(our_queue) {
        return Holder::Free;
    }
    match bound.iter().find(|(q, _)| *q == h.queue) {
        Some(&(queue, portid)) => Holder::Foreign { queue, portid },
        None => Holder::Orphan { queue: h.queue },
    }
}

/// The kernel's user-space helpers (empty if the dump fails: registration then reports
/// what is wrong).
fn list(ctl: &mut Ctl<'_>) -> heapless::Vec<Listed, LISTED_MAX> {
    let mut listed = heapless::Vec::new();
    let _ = ctl.request(cthelper::write_dump, |msg| {
        let Ok(info) = cthelper::parse_helper(msg) else {
            return;
        };
        let Ok(name) = heapless::String::try_from(info.name) else {
            return;
        };
        let _ = listed.push(Listed {
            name,
            family: info.family,
            proto: info.l4proto,
            queue: info.queue,
        });
    });
    listed
}

/// Bound queues of /proc/net/netfilter/nfnetlink_queue: (queue, port id).
fn bound_queues(text: Option<&str>) -> heapless::Vec<(u32, u32), LISTED_MAX> {
    let mut bound = heapless::Vec::new();
    for line in text.unwrap_or("").lines() {
        if let Some(q) = crate::status::parse_proc_line(line) {
            let _ = bound.push((u32::from(q.queue), q.portid));
        }
    }
    bound
}

impl Daemon {
    /// Refuse to take a helper from a process that is still using it (see the module
    /// documentation); note the ones taken over from a process that is gone.
    pub(super) fn check_holders(&mut self) -> Result<(), String> {
        let listed = list(&mut self.ctl());
        if listed.is_empty() {
            return Ok(());
        }
        let bound = bound_queues(crate::status::read_proc_queues(&mut self.bufs.proc_queues));
        for s in &self.slots {
            for family in s.families.iter() {
                for proto in s.protos.iter() {
                    match holder(&listed, s.name, family, proto, s.queue, &bound) {
                        Holder::Free => {}
                        Holder::Orphan { queue } => info!(
                            "helper {} ({}, {}) was left registered on queue {queue} by a \
                             process that no longer listens there; taking it over",
                            s.name,
                            super::family_name(family),
                            crate::config::proto_name(proto)
                        ),
                        Holder::Foreign { queue, portid } => {
                            return Err(format!(
                                "helper {} ({}, {}) is registered by another process that \
                                 listens on queue {queue} (netlink port {portid}; conntrackd in \
                                 helper mode?): taking it over would leave that process \
                                 without its packets. Stop it, or remove its helper (nfct \
                                 delete helper {} ...), then start cthelperd",
                                s.name,
                                super::family_name(family),
                                crate::config::proto_name(proto),
                                s.name
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IPPROTO_TCP;

    fn listed(name: &str, family: Option<Family>, queue: u32) -> Listed {
        Listed {
            name: heapless::String::try_from(name).unwrap(),
            family,
            proto: IPPROTO_TCP,
            queue,
        }
    }

    #[test]
    fn a_helper_is_ours_orphaned_or_foreign() {
        let l = [
            listed("ftp", Some(Family::Ipv4), 0),
            listed("ftp", Some(Family::Ipv6), 48000),
            listed("sip", Some(Family::Ipv4), 7),
        ];
        let conntrackd = [(0, 4242), (48000, 99)];
        assert_eq!(
            holder(&l, "ftp", Family::Ipv4, IPPROTO_TCP, 48000, &conntrackd),
            Holder::Foreign {
                queue: 0,
                portid: 4242
            }
        );
        assert_eq!(
            holder(&l, "ftp", Family::Ipv6, IPPROTO_TCP, 48000, &conntrackd),
            Holder::Free,
            "on our queue: ours"
        );
        assert_eq!(
            holder(&l, "sip", Family::Ipv4, IPPROTO_TCP, 48002, &conntrackd),
            Holder::Orphan { queue: 7 },
            "nobody listens on 7"
        );
        assert_eq!(
            holder(&l, "sip", Family::Ipv4, 17, 48002, &conntrackd),
            Holder::Free,
            "another protocol"
        );
        assert_eq!(
            holder(&l, "tftp", Family::Ipv4, IPPROTO_TCP, 48001, &conntrackd),
            Holder::Free
        );
    }

    #[test]
    fn bound_queues_come_from_proc() {
        let text = "    0   4242     0 2 65531     0     0        5  1\n48000     99     0 2 65535     0     0       10  1\n";
        assert_eq!(
            bound_queues(Some(text)).as_slice(),
            &[(0, 4242), (48000, 99)]
        );
        assert!(bound_queues(None).is_empty());
    }
}
