//! Socket code fails cleanly where netlink is refused.
//!
//! qemu-user (cross/test.sh runs this suite for ARM and MIPS under it) refuses
//! NETLINK_NETFILTER sockets with EPROTONOSUPPORT. Natively the socket opens. Either
//! way nothing may panic, and the refusal must reach the caller as an error that
//! names the cause, so `cthelperd check` and the daemon can report it and exit.

use cthelperd::netlink::socket::{IoError, Socket};
use nix::errno::Errno;

/// Errors a kernel or an emulator may legitimately answer the socket() call with.
const REFUSALS: [Errno; 3] = [Errno::EPROTONOSUPPORT, Errno::EAFNOSUPPORT, Errno::EPERM];

fn refused() -> Option<IoError> {
    Socket::open().err()
}

#[test]
fn socket_open_succeeds_or_fails_with_a_clean_error() {
    match Socket::open() {
        Ok(sock) => {
            // Natively: a bound socket with a port id from the kernel.
            assert_ne!(sock.portid(), 0, "bound netlink socket has a port id");
        }
        Err(e) => {
            let errno = e.errno().expect("a refused socket is a system-call error");
            assert!(
                REFUSALS.contains(&errno),
                "unexpected error opening a netlink socket: {e}"
            );
            let text = e.to_string();
            assert!(
                text.contains(&format!("{errno:?}")),
                "{text:?} names the errno"
            );
            eprintln!("netlink socket refused here (qemu-user?): {text}");
        }
    }
}

#[test]
fn check_reports_a_refused_socket_as_a_failed_finding() {
    // Only where the socket is refused: natively as root, check::run() would probe the
    // host kernel (bind a queue), which is the kernel tests' business.
    let Some(err) = refused() else { return };
    let findings = cthelperd::check::run();
    let net = findings
        .iter()
        .find(|f| f.what == "netfilter netlink")
        .expect("check reports the netlink socket");
    assert!(!net.ok);
    assert!(
        net.detail.contains(&format!("{:?}", err.errno().unwrap())),
        "detail names the errno: {}",
        net.detail
    );
    assert!(!findings.iter().all(|f| f.ok), "check must not pass");
}

#[test]
fn daemon_start_fails_cleanly_when_the_socket_is_refused() {
    let Some(_) = refused() else { return };
    match cthelperd::daemon::Daemon::start(cthelperd::config::Config::default()) {
        Ok(_) => panic!("daemon started without a netlink socket"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("netlink socket"), "{text}");
        }
    }
}
