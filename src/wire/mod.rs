//! Packet formats: IPv4/IPv6, TCP/UDP, checksums, and text scanning for the helpers.
