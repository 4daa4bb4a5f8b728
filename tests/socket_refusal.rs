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

#[test]
fn a_request_the_kernel_never_answers_times_out() {
    // The daemon's control socket waits a bounded time for an answer: a kernel that
    // never answers (here: an answer to another sequence number) must not stall the
    // packet path for ever.
    use cthelperd::netlink::attr::Writer;
    use cthelperd::netlink::msg::{NFNETLINK_V0, NLM_F_ACK, NLM_F_REQUEST, NfGenMsg};
    use cthelperd::netlink::socket::Link;
    use cthelperd::netlink::{nfnl_type, subsys};
    let Ok(mut sock) = Socket::open() else {
        eprintln!("netlink refused here; nothing to time out");
        return;
    };
    sock.set_reply_timeout(std::time::Duration::from_millis(100))
        .unwrap();
    let seq = sock.next_seq();
    let mut req = [0u8; 64];
    let mut w = Writer::new(&mut req);
    // A conntrack-expectation GET without attributes: the kernel answers it (an error)
    // with `seq`, which is not the one waited for below.
    let m = w
        .begin_nfnl(
            nfnl_type(subsys::CTNETLINK_EXP, 1),
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            NfGenMsg {
                family: 2,
                version: NFNETLINK_V0,
                res_id: 0,
            },
        )
        .unwrap();
    w.end_msg(m).unwrap();
    let len = w.len();
    let mut rx = [0u8; 8192];
    let t0 = std::time::Instant::now();
    let got = sock.transact(&req[..len], seq.wrapping_add(1000), &mut rx, |_| {});
    assert_eq!(got, Err(IoError::Timeout));
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
}
