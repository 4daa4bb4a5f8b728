//! Logging backends for the `log` facade: standard streams (procd hands them to logd) or
//! syslog. Errors and warnings go to stderr and everything else to stdout, because procd
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

/// Install the logger. Falls back to stderr (with a warning) when syslog is asked
/// for but unreachable.
pub fn init(level: LevelFilter, use_syslog: bool) {
    if use_syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "cthelperd".into(),
            pid: std::process::id(),
        };
        match syslog::unix(formatter) {
            Ok(logger) => {
                if log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok() {
                    log::set_max_level(level);
                    return;
                }
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "cthelperd: warning: syslog unavailable ({e}); logging to stderr"
                );
            }
        }
    }
    let _ = log::set_boxed_logger(Box::new(StderrLogger));
    log::set_max_level(level);
}
