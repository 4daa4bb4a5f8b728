//! Netlink: socket, message and attribute codecs, and the nfnetlink subsystems we speak.
