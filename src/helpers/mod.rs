//! Application-layer helpers. Each is a pure function from (packet, conntrack, private
//! data) to an [`Action`]: no I/O, no allocation, no state outside the private data the
//! kernel stores with the conntrack (so a daemon restart loses nothing).

pub mod ftp;
pub mod tftp;

use core::net::IpAddr;

use crate::conntrack::{Conntrack, Direction, Expectation};

/// Largest private area the kernel keeps per helped conntrack (NF_CT_HELPER_BUILD_MAX... the
/// cthelper PRIV_DATA_LEN limit).
pub const PRIVATE_DATA_MAX: usize = 32;

/// How many expectations one packet may ask for (SIP: RTP + RTCP per media line).
pub const MAX_EXPECTATIONS_PER_PACKET: usize = 8;

/// How many refused announcements one packet may report.
pub const MAX_REFUSALS_PER_PACKET: usize = 4;

/// Transport-layer view of a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp { seq: u32, flags: u8 },
    Udp,
}

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

/// Why an announcement did not become an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The announced address is not the sender's own address (FTP bounce, third party).
    ThirdPartyAddress,
    /// The announced port is 0 or otherwise unusable.
    BadPort,
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

/// What a helper wants done with one packet. The verdict is always accept: helpers never
/// drop traffic they fail to understand.
#[derive(Debug, Default)]
pub struct Action {
    pub expectations: heapless::Vec<Expectation, MAX_EXPECTATIONS_PER_PACKET>,
    pub refusals: heapless::Vec<Refusal, MAX_REFUSALS_PER_PACKET>,
    /// The private data was changed and must be written back to the conntrack.
    pub private_changed: bool,
    /// The payload contained something that looked like a command or reply the helper
    /// acts on but could not be parsed.
    pub parse_error: bool,
}

/// A connection-tracking helper.
pub trait Helper {
    /// Kernel-visible helper name ("ftp", "tftp", "sip").
    fn name(&self) -> &'static str;

    /// Bytes of private data the helper keeps per conntrack (registered with the kernel).
    fn private_len(&self) -> usize;

    /// Look at one packet. `private` is exactly `private_len()` bytes; all zero for a
    /// connection the helper has never seen.
    fn process(&self, pkt: &Packet<'_>, ct: &Conntrack, private: &mut [u8]) -> Action;
}
