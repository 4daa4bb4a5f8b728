//! Logging backends for the `log` facade: standard streams or syslog (`/dev/log`).
//!
//! On the standard streams errors and warnings go to stderr and everything else to
//! stdout, each line `cthelperd: <level>: message`. Under procd the init script passes
//! `--syslog`: procd would log both streams itself as `cthelperd[pid]: cthelperd: ...`
//! (a second tag) and at two priorities only (stderr err, stdout info, so debug lines
//! would show as info). Over /dev/log every line carries its own priority (debug at
//! LOG_DEBUG) and the one tag `cthelperd[pid]`.
//!
//! The logger is installed once, before the configuration is read (so that a
//! configuration error reaches syslog too), and can switch to syslog afterwards when
//! the file asks for it.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The installed logger: syslog once `syslog` is set, the standard streams until then.
/// Filters on `log::max_level()`, so that a reload can change the level.
struct Logger {
    syslog: std::sync::OnceLock<SyslogLogger>,
}

static LOGGER: Logger = Logger {
    syslog: std::sync::OnceLock::new(),
};

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match self.syslog.get() {
            Some(s) => s.send(record),
            None => log_to_streams(record),
        }
    }

    fn flush(&self) {}
}

fn log_to_streams(record: &Record<'_>) {
    let tag = match record.level() {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    if record.level() <= Level::Warn {
        write_line(&mut std::io::stderr().lock(), tag, record);
    } else {
        write_line(&mut std::io::stdout().lock(), tag, record);
    }
}

/// Format into a fixed buffer and write the line with one call, so that concurrent
/// writers never interleave mid-line; no heap allocation (lines are logged from the
/// packet path).
fn write_line(out: &mut impl Write, tag: &str, record: &Record<'_>) {
    let mut line = heapless::Vec::<u8, 512>::new();
    if writeln!(VecWriter(&mut line), "cthelperd: {tag}: {}", record.args()).is_err() {
        // Longer than the line buffer: let the stream format it.
        let _ = writeln!(out, "cthelperd: {tag}: {}", record.args());
    } else {
        let _ = out.write_all(&line);
    }
    let _ = out.flush();
}

struct VecWriter<'a, const N: usize>(&'a mut heapless::Vec<u8, N>);

impl<const N: usize> std::io::Write for VecWriter<'_, N> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .extend_from_slice(buf)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parse a level name as used on the command line and in the configuration.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s.to_ascii_lowercase().as_str() {
        "off" | "none" => Some(LevelFilter::Off),
        "error" | "err" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" | "notice" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Syslog over the local datagram socket, in the plain `<PRI>tag[pid]: message` form
/// that syslogd, rsyslog and OpenWrt's logd all accept (they stamp the time on
/// arrival). Written here rather than with the `syslog` crate, which brings the `time`
/// crate and its run-time format parser: about 45 KB of a router binary whose budget
/// is 400 KB.
struct SyslogLogger {
    socket: std::os::unix::net::UnixDatagram,
    pid: u32,
}

const SYSLOG_PATH: &str = "/dev/log";
/// Another syslog socket, for tests (`tests/syslog.rs`): the environment variable
/// CTHELPERD_SYSLOG_SOCKET.
const SYSLOG_PATH_ENV: &str = "CTHELPERD_SYSLOG_SOCKET";
const LOG_DAEMON: u8 = 3 << 3;

impl SyslogLogger {
    fn connect() -> std::io::Result<SyslogLogger> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.connect(syslog_path())?;
        Ok(SyslogLogger {
            socket,
            pid: std::process::id(),
        })
    }
}

fn syslog_path() -> std::path::PathBuf {
    std::env::var_os(SYSLOG_PATH_ENV).map_or_else(|| SYSLOG_PATH.into(), Into::into)
}

/// RFC 5424 severities for the `log` levels.
fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl SyslogLogger {
    /// One datagram for one record (the level filter is `Logger`'s).
    fn send(&self, record: &Record<'_>) {
        let mut msg = heapless::Vec::<u8, 1024>::new();
        // A message longer than the buffer is cut, not dropped.
        let _ = write!(
            VecWriter(&mut msg),
            "<{}>cthelperd[{}]: {}",
            LOG_DAEMON | severity(record.level()),
            self.pid,
            record.args()
        );
        if self.socket.send(&msg).is_err() {
            // syslogd restarted and re-created its socket: reconnect once.
            if self.socket.connect(syslog_path()).is_ok() {
                let _ = self.socket.send(&msg);
            }
        }
    }
}

/// Install the logger (once; later calls only set the level and may switch to syslog).
/// Falls back to the standard streams, with a warning, when syslog is asked for but
/// unreachable.
pub fn init(level: LevelFilter, use_syslog: bool) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    if use_syslog {
        enable_syslog();
    }
}

/// Send every further line to syslog. False (and a warning on stderr) if /dev/log
/// cannot be reached; the standard streams stay in use then.
pub fn enable_syslog() -> bool {
    if LOGGER.syslog.get().is_some() {
        return true;
    }
    match SyslogLogger::connect() {
        Ok(logger) => {
            let _ = LOGGER.syslog.set(logger);
            true
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "cthelperd: warning: syslog unavailable ({}: {e}); logging to stderr/stdout",
                syslog_path().display()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_carry_daemon_facility_and_severity() {
        let dir = std::env::temp_dir().join(format!("cthelperd-syslog-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let server = std::os::unix::net::UnixDatagram::bind(&dir).unwrap();
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        socket.connect(&dir).unwrap();
        let logger = SyslogLogger { socket, pid: 42 };
        logger.send(
            &Record::builder()
                .level(Level::Warn)
                .args(format_args!("queue {} overrun", 3))
                .build(),
        );
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>cthelperd[42]: queue 3 overrun");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn debug_lines_go_out_at_debug_priority_with_one_tag() {
        let path = std::env::temp_dir().join(format!("cthelperd-syslog-d-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        socket.connect(&path).unwrap();
        let logger = SyslogLogger { socket, pid: 7 };
        let mut buf = [0u8; 256];
        for (level, pri) in [
            (Level::Debug, "<31>"),
            (Level::Info, "<30>"),
            (Level::Error, "<27>"),
        ] {
            logger.send(
                &Record::builder()
                    .level(level)
                    .args(format_args!("expecting 6 192.0.2.2 -> 198.51.100.2:40011"))
                    .build(),
            );
            let n = server.recv(&mut buf).unwrap();
            assert_eq!(
                std::str::from_utf8(&buf[..n]).unwrap(),
                format!("{pri}cthelperd[7]: expecting 6 192.0.2.2 -> 198.51.100.2:40011")
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}
