//! The daemon's log lines over syslog, as procd runs it (`--syslog`): one tag
//! (`cthelperd[pid]`, no second `cthelperd:` inside the message), each line at its own
//! priority (debug at LOG_DEBUG), and a configuration error too, not only the lines
//! after the file was read. A datagram socket in a temporary directory stands in for
//! /dev/log (CTHELPERD_SYSLOG_SOCKET).

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

struct Syslog {
    dir: std::path::PathBuf,
    socket: UnixDatagram,
}

impl Syslog {
    fn new(name: &str) -> Syslog {
        let dir = std::env::temp_dir().join(format!("cthelperd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = UnixDatagram::bind(dir.join("log")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Syslog { dir, socket }
    }

    /// Run the daemon with `args` (and `--syslog`); its exit code, stderr and the
    /// syslog lines it sent.
    fn run(&self, args: &[&str]) -> (Option<i32>, String, Vec<String>) {
        // Under cross-target testing through the emulator cross/test.sh names.
        let bin = env!("CARGO_BIN_EXE_cthelperd");
        let mut cmd = match std::env::var_os("CTHELPERD_TEST_RUNNER") {
            Some(runner) => {
                let mut c = Command::new(runner);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let out = cmd
            .arg("--syslog")
            .args(args)
            .env("CTHELPERD_SYSLOG_SOCKET", self.dir.join("log"))
            .output()
            .unwrap();
        let mut lines = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.socket.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            lines,
        )
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `<PRI>cthelperd[PID]: ` and the message.
fn split(line: &str) -> (u8, &str) {
    let (pri, rest) = line[1..].split_once('>').expect("<PRI>");
    let rest = rest.strip_prefix("cthelperd[").expect("tag");
    let (pid, msg) = rest.split_once("]: ").expect("[pid]: ");
    assert!(pid.parse::<u32>().is_ok(), "{line}");
    (pri.parse().unwrap(), msg)
}

#[test]
fn a_configuration_error_goes_to_syslog_with_one_tag() {
    let log = Syslog::new("syslog-err");
    let conf = log.file("bad.conf", "config globals\n\toption log_level 'loud'\n");
    let (code, stderr, lines) = log.run(&["--config", &conf]);
    assert_eq!(code, Some(2));
    assert_eq!(lines.len(), 1, "{lines:?} stderr {stderr:?}");
    let (pri, msg) = split(&lines[0]);
    assert_eq!(pri, 3 << 3 | 3, "LOG_DAEMON | LOG_ERR");
    assert!(msg.starts_with(&format!("{conf}:2: log_level: ")), "{msg}");
    assert!(
        !msg.contains("cthelperd:") && !msg.starts_with("error"),
        "{msg}"
    );
    assert_eq!(stderr, "", "nothing for procd to log a second time");
}

#[test]
fn debug_lines_have_debug_priority() {
    let log = Syslog::new("syslog-debug");
    // enabled '0': the daemon reads the file, logs and exits 0 without a kernel
    let conf = log.file("off.conf", "config globals 'main'\n\toption enabled '0'\n");
    let (code, stderr, lines) = log.run(&["-v", "--config", &conf]);
    assert_eq!(code, Some(0), "{stderr}");
    let parsed: Vec<(u8, &str)> = lines.iter().map(|l| split(l)).collect();
    assert!(
        parsed
            .iter()
            .any(|&(pri, msg)| pri == 3 << 3 | 7 && msg.starts_with("configuration: ")),
        "{lines:?}"
    );
    assert!(
        parsed
            .iter()
            .any(|&(pri, msg)| pri == 3 << 3 | 6 && msg.contains("disabled in the configuration")),
        "{lines:?}"
    );
    assert!(parsed.iter().all(|(_, msg)| !msg.contains("cthelperd:")));
    assert_eq!(stderr, "");
}
