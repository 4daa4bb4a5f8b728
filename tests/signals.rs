//! Signals during start-up: procd sends SIGHUP for a reload whenever the configuration is
//! committed, possibly while the daemon is still starting (reading its file, waiting for
//! nft). The daemon blocks its signals as the first thing in main(), so such a signal
//! waits for the poll loop instead of killing the process with its default action.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The blocked-signal mask of a process, from /proc (None where it cannot be read).
fn blocked_mask(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("SigBlk:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

#[test]
fn sighup_during_start_up_does_not_kill_the_daemon() {
    if std::env::var_os("CTHELPERD_TEST_RUNNER").is_some() {
        // Under qemu-user /proc shows the emulator's own signal mask, not the guest's.
        eprintln!("skipped under an emulator");
        return;
    }
    let dir = std::env::temp_dir().join(format!("cthelperd-signals-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A FIFO as the configuration file holds the daemon inside start-up (opening it
    // blocks until a writer comes) for as long as the test wants.
    let fifo = dir.join("cthelperd.config");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cthelperd"))
        .arg("--config")
        .arg(&fifo)
        .arg("--control-socket")
        .arg(dir.join("sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until main() has blocked SIGHUP (bit 0 of the mask), then send it while the
    // daemon is still opening its configuration.
    let deadline = Instant::now() + Duration::from_secs(10);
    while blocked_mask(pid).is_none_or(|m| m & 1 == 0) {
        assert!(Instant::now() < deadline, "SIGHUP never blocked");
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // Feed the configuration to every reader: the start, and the reload the SIGHUP
    // asks for once the daemon serves (where this kernel lets it start). On a kernel
    // without user-space helpers the start fails (exit 1); where it succeeds the daemon
    // serves until told to stop (SIGTERM: a clean exit 0).
    let mut reads = 0;
    let mut sent_term = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if let Ok(mut w) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&fifo)
        {
            // A reader is there (ENXIO otherwise).
            w.write_all(b"config globals\n\toption firewall '0'\n")
                .unwrap();
            reads += 1;
            drop(w);
            // Let the reader take it all before a writer opens again: two writes could
            // meet in one read (two globals sections), and an open without a write
            // would hand a reader an empty file.
            std::thread::sleep(Duration::from_millis(300));
        }
        if (reads >= 2 || Instant::now() > deadline) && !sent_term {
            std::thread::sleep(Duration::from_millis(200));
            kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
            sent_term = true;
        }
        if Instant::now() > deadline + Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the daemon does not stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(reads >= 1, "the configuration was never read");
    assert_eq!(status.signal(), None, "killed by a signal: {status:?}");
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "exit status {status:?}"
    );
}
