//! `cthelperd replay FILE [--json] [--helper NAME:PORT]...`, kept out of main.rs so
//! the command-line file only dispatches.

use std::io::Write;
use std::path::Path;

use super::{Replayer, capture, output};
use crate::config::Config;

/// Exit status for a usage or data error (bad option, unreadable or malformed capture).
const EXIT_USAGE: i32 = 2;

/// Replay `file` and print its events on stdout; returns the process exit code.
pub fn run(file: &Path, json: bool, helper_specs: &[String]) -> i32 {
    let cfg = Config::default();
    let mut rules = super::rules_from_config(&cfg);
    for spec in helper_specs {
        match super::parse_rule(spec, &cfg) {
            // An explicit rule is consulted first, so it can also move a helper off a
            // default port's protocol/port pair.
            Ok(new) => {
                rules.splice(0..0, new);
            }
            Err(e) => {
                eprintln!("cthelperd: error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cthelperd: error: {}: {e}", file.display());
            return EXIT_USAGE;
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match replay_to(&bytes, &rules, json, &mut out) {
        Ok(Ok(())) => match out.flush() {
            Ok(()) => 0,
            Err(e) => write_failed(&e),
        },
        Ok(Err(e)) => {
            // Events before the bad record were real: keep them, then say where it broke.
            let _ = out.flush();
            eprintln!("cthelperd: error: {}: {e}", file.display());
            EXIT_USAGE
        }
        Err(e) => write_failed(&e),
    }
}

/// A closed pipe (`| head`) is the reader's choice, not a failure.
fn write_failed(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        0
    } else {
        eprintln!("cthelperd: error: cannot write output: {e}");
        1
    }
}

/// Replay and write every event line, then the summary. The outer result is the
/// output's, the inner the capture's.
pub fn replay_to(
    bytes: &[u8],
    rules: &[super::Rule],
    json: bool,
    out: &mut dyn Write,
) -> std::io::Result<Result<(), capture::Error>> {
    let capture = match capture::Capture::new(bytes) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut r = Replayer::new(rules);
    let mut events = Vec::new();
    for rec in capture {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => return Ok(Err(e)),
        };
        events.clear();
        r.record(&rec, &mut events);
        for ev in &events {
            let line = if json {
                output::json_line(ev)
            } else {
                output::text_line(ev)
            };
            writeln!(out, "{line}")?;
        }
    }
    let summary = r.finish();
    if json {
        writeln!(out, "{}", output::json_summary(summary))?;
    } else {
        for line in output::text_summary(summary) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(Ok(()))
}
