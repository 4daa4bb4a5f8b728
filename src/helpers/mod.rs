//! Application-layer helpers. Each is an analysis from (packet, conntrack, private
//! data, the helper's store) to a [`Plan`]: no I/O, no allocation, no state outside the
//! private data the kernel stores with the conntrack (so a daemon restart loses nothing)
//! and the bounded per-helper [`Store`] for what does not fit there.

pub mod ftp;
pub mod plan;
pub mod registry;
pub mod sip;
pub mod store;
pub mod tftp;

use core::net::IpAddr;

use crate::model::{Conntrack, Direction};

pub use plan::{
    Expect, MAX_DELETIONS_PER_PACKET, MAX_EXPECTATIONS_PER_PACKET, MAX_REFUSALS_PER_PACKET,
    MAX_REWRITES_PER_PACKET, PLAN_TEXT_MAX, Pairing, Plan, PortText, Replacement, Rewrite, Span,
    Spelling,
};
pub use store::{STORE_ENTRIES, STORE_VALUE_MAX, Store, StoreError, StoreKey};

/// Largest private area the kernel keeps per helped conntrack (NF_CT_HELPER_BUILD_MAX... the
/// cthelper PRIV_DATA_LEN limit).
pub const PRIVATE_DATA_MAX: usize = 32;

pub use crate::wire::Transport;

/// One queued packet as a helper sees it. Addresses are those in the packet's IP header
/// (at the helper hook, after NAT); the conntrack carries the untranslated tuples.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub dir: Direction,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub transport: Transport,
    /// The application payload (after the TCP/UDP header).
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// The helper's view of a dissected packet travelling in `dir` of its connection.
    pub fn from_dissected(dir: Direction, d: &crate::wire::Dissected<'a>) -> Packet<'a> {
        Packet {
            dir,
            src: d.src,
            dst: d.dst,
            src_port: d.src_port,
            dst_port: d.dst_port,
            transport: d.transport,
            payload: d.payload,
        }
    }
}

/// Why an announcement did not become an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The announced address is not the sender's own address (FTP bounce, third party).
    ThirdPartyAddress,
    /// The announced port is 0 or otherwise unusable.
    BadPort,
    /// A port below 1024, refused unless the helper's `allow_low_ports` policy is set.
    LowPort,
}

/// Per-helper settings from the configuration that change what a helper accepts. Small
/// and `Copy`: the daemon keeps one per slot and hands it to every run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept announced ports below 1024. Off by default: an FTP server behind a port
    /// forward that announces port 22 is being abused (issue #11), and so is a client
    /// announcing its own port 23 (issue #17); neither is serving data. FTP applies it
    /// with or without NAT; TFTP has nothing to apply it to (its expectation is towards
    /// the client's own port, from the server), so it ignores it.
    pub allow_low_ports: bool,
    /// SIP's options (the other helpers ignore them).
    pub sip: sip::Options,
}

/// An announcement the helper saw and deliberately did not act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Protocol element, e.g. "PORT", "EPRT", "227", "229".
    pub what: &'static str,
    pub announced: IpAddr,
    pub port: u16,
    pub sender: IpAddr,
    pub reason: RefusalReason,
}

/// A connection-tracking helper's code. Its name, protocols, expectation classes and
/// private-data length are in its [`registry`] entry.
pub trait Helper {
    /// Analyse one packet: what should happen (expectations, deletions, rewrites) and
    /// the updated per-connection state. `private` is exactly the registry's
    /// `private_len` bytes; all zero for a connection the helper has never seen. `store`
    /// is the helper's own (one per configured helper; without a table unless its
    /// registry entry asks for one). `policy` is the helper's configured policy.
    fn analyse(
        &self,
        pkt: &Packet<'_>,
        ct: &Conntrack,
        private: &mut [u8],
        store: &mut Store,
        policy: Policy,
    ) -> Plan;

    /// Whether this packet of an *expected* connection (one the helper's own expectation
    /// admitted, status IPS_EXPECTED) is to be analysed. Such connections reach the
    /// daemon when the kernel gives them their master's helper (some kernels do for
    /// every expected connection); FTP and TFTP data is never analysed, so the default
    /// is no: the daemon accepts the packet at once. Only asked when the registry entry
    /// says `helps_expected`.
    fn helps_expected(&self, _pkt: &Packet<'_>) -> bool {
        false
    }
}

/// The outcome of one helper run: what to do, and the private data to hand back to the
/// kernel when `plan.private_changed`.
#[derive(Debug)]
pub struct Run {
    pub plan: Plan,
    pub private: [u8; PRIVATE_DATA_MAX],
    pub private_len: usize,
}

impl Run {
    /// The private data as the helper left it (`private_len` bytes).
    pub fn private(&self) -> &[u8] {
        self.private.get(..self.private_len).unwrap_or(&[])
    }
}

/// Run a built-in helper on one packet with the private data the kernel keeps for the conntrack
/// (`None` before the helper ever wrote any). The daemon (from a queued packet) and
/// `replay` (from a capture) both go through here, so a capture is judged by exactly the
/// code that judges live traffic. The kernel may hand over a shorter or longer area than
/// the helper registered (an older layout, or none yet): it is zero-extended or cut to
/// the registry's `private_len`, which every helper treats as "fresh" or decodes
/// defensively.
pub fn run(
    builtin: &registry::Builtin,
    pkt: &Packet<'_>,
    ct: &Conntrack,
    info: Option<&[u8]>,
    store: &mut Store,
    policy: Policy,
) -> Run {
    let private_len = builtin.private_len.min(PRIVATE_DATA_MAX);
    let mut private = [0u8; PRIVATE_DATA_MAX];
    if let Some(info) = info {
        let n = info.len().min(private_len);
        if let (Some(dst), Some(src)) = (private.get_mut(..n), info.get(..n)) {
            dst.copy_from_slice(src);
        }
    }
    let plan = match private.get_mut(..private_len) {
        Some(area) => builtin.helper.analyse(pkt, ct, area, store, policy),
        None => Plan::default(),
    };
    Run {
        plan,
        private,
        private_len,
    }
}
