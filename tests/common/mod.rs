//! Test-only helpers shared by the integration tests: a capture reader and a tiny JSON
//! parser (so the tests need no dev-dependencies).
#![allow(dead_code)]

pub mod json;
pub mod pcap;
