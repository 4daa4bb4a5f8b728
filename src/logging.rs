//! Logging backends for the `log` facade: standard streams (procd hands them to logd) or
//! syslog (`/dev/log`). Errors and warnings go to stderr and everything else to stdout, because procd
//! logs a service's stderr at priority err and its stdout at info: one stream for all
//! would file every routine line as an error in logread.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Filters on `log::max_level()`, so that a reload can change the level.
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
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

    fn flush(&self) {}
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
const LOG_DAEMON: u8 = 3 << 3;

impl SyslogLogger {
    fn connect() -> std::io::Result<SyslogLogger> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.connect(SYSLOG_PATH)?;
        Ok(SyslogLogger {
            socket,
            pid: std::process::id(),
        })
    }
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

impl Log for SyslogLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
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
            if self.socket.connect(SYSLOG_PATH).is_ok() {
                let _ = self.socket.send(&msg);
            }
        }
    }

    fn flush(&self) {}
}

/// Install the logger. Falls back to the standard streams (with a warning) when syslog
/// is asked for but unreachable.
pub fn init(level: LevelFilter, use_syslog: bool) {
    if use_syslog {
        match SyslogLogger::connect() {
            Ok(logger) => {
                // Installed once for the life of the process.
                if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
                    log::set_max_level(level);
                    return;
                }
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "cthelperd: warning: syslog unavailable ({SYSLOG_PATH}: {e}); logging to stderr/stdout"
                );
            }
        }
    }
    static STREAMS: StderrLogger = StderrLogger;
    let _ = log::set_logger(&STREAMS);
    log::set_max_level(level);
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
        log::set_max_level(LevelFilter::Info);
        logger.log(
            &Record::builder()
                .level(Level::Warn)
                .args(format_args!("queue {} overrun", 3))
                .build(),
        );
        logger.log(
            &Record::builder()
                .level(Level::Debug)
                .args(format_args!("hidden"))
                .build(),
        );
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>cthelperd[42]: queue 3 overrun");
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err(), "debug is below the level");
        let _ = std::fs::remove_file(&dir);
    }
}
