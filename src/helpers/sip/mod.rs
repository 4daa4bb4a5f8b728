//! SIP (RFC 3261) with SDP (RFC 4566): the SIP helper (`helper`) and the parsers it is
//! built on. Pure and
//! zero-copy: every parser returns byte ranges into the message buffer, never panics on
//! any input, and allocates nothing.
//!
//! - `message`: start line, header section (one table with the compact forms),
//!   Content-Length body, stream framing
//! - `uri`: SIP URIs, name-addr/addr-spec with parameters, Via sent-by
//! - `sdp`: o=, c=, m=, a=rtcp and direction attributes
//! - `stream`: message starts in a TCP stream (only streams that began as SIP), reassembly
//! - `media`: what a message asks to have opened: media streams, confirmed registrations
//! - `nat`: what a message on a translated connection has rewritten

mod helper;
pub mod media;
pub mod message;
pub mod nat;
pub mod sdp;
pub mod stream;
pub mod uri;

pub use helper::{PORT, PRIVATE_LEN, Sip};

/// The SIP helper's options, named after the kernel module's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `sip_direct_media`: media only from the other end of the signalling connection.
    /// Off: from any address (a provider whose media gateway is not its SIP proxy). Either
    /// way media go only to the address that announced them: the kernel with this off
    /// opens the SDP's address whatever it is, a door to any host behind the router for
    /// whoever can put an SDP body on a helped port (NAT Slipstreaming); we refuse it.
    pub direct_media: bool,
    /// `sip_direct_signalling`: a registered phone's incoming calls only from its
    /// registrar's address. Off: from any address.
    pub direct_signalling: bool,
    /// `sip_timeout`: seconds a UDP signalling connection lives after each message, so
    /// that it outlives the registration it carries (the kernel's 3600).
    pub timeout: u32,
}

/// The kernel's default `sip_timeout`, one hour.
pub const DEFAULT_TIMEOUT: u32 = 3600;

impl Default for Options {
    fn default() -> Self {
        Options {
            direct_media: true,
            direct_signalling: true,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}
