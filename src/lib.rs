//! cthelperd: a user-space netfilter connection-tracking helper daemon.
//!
//! The library holds everything that is not process plumbing, so that the daemon, the
//! tests and the fuzz targets all run the same code.
// No unsafe code, except the one documented setsockopt call in netlink/socket.rs that
// nix has no wrapper for (NETLINK_* socket options), and lazy_buf.rs's anonymous mappings
// (buffers that become resident only where written).
#![deny(unsafe_code)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod check;
pub mod config;
pub mod daemon;
pub mod firewall;
pub mod helpers;
pub mod lazy_buf;
pub mod logging;
pub mod model;
pub mod nat;
pub mod netlink;
pub mod private_cache;
pub mod reload;
#[cfg(feature = "replay")]
pub mod replay;
pub mod status;
pub mod wire;
