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

mod helper;
pub mod media;
pub mod message;
pub mod sdp;
pub mod stream;
pub mod uri;

pub use helper::{PORT, PRIVATE_LEN, Sip};
