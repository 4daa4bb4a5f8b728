//! Netlink: socket, message and attribute codecs, and the nfnetlink subsystems we speak
//! (cthelper, queue, ctnetlink). Everything here works over caller-provided fixed
//! buffers; nothing allocates.

pub mod attr;
pub mod cthelper;
pub mod ctnetlink;
pub mod msg;
pub mod nftables;
pub mod queue;
pub mod socket;

use core::fmt;

/// nfnetlink subsystem ids (the high byte of the message type).
pub mod subsys {
    pub const CTNETLINK: u8 = 1;
    pub const CTNETLINK_EXP: u8 = 2;
    pub const QUEUE: u8 = 3;
    pub const CTHELPER: u8 = 9;
}

/// Build an nfnetlink message type from subsystem and message.
pub const fn nfnl_type(subsys: u8, msg: u8) -> u16 {
    ((subsys as u16) << 8) | msg as u16
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A message or attribute claims more bytes than there are.
    Truncated,
    /// A length or value that the format does not allow.
    Malformed(&'static str),
    /// An attribute the message needs is absent.
    Missing(&'static str),
    /// The output buffer cannot hold what we are writing.
    BufferFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated netlink data"),
            Error::Malformed(what) => write!(f, "malformed netlink data: {what}"),
            Error::Missing(what) => write!(f, "netlink message lacks {what}"),
            Error::BufferFull => f.write_str("netlink buffer full"),
        }
    }
}

pub type Result<T> = core::result::Result<T, Error>;
