//! cthelperd command line.

use argh::FromArgs;
use log::{LevelFilter, error};

use cthelperd::daemon::{Daemon, Recorder};
use cthelperd::{check, config::Config, logging};

/// Exit codes (documented in README).
const EXIT_OK: i32 = 0;
const EXIT_RUNTIME: i32 = 1;
const EXIT_USAGE: i32 = 2;

#[derive(FromArgs)]
/// User-space conntrack helper daemon (FTP) for netfilter. Without a subcommand it
/// registers its helpers and serves in the foreground until SIGTERM.
struct Cli {
    /// log debug messages (same as --log-level debug)
    #[argh(switch, short = 'v')]
    verbose: bool,
    /// log level: error, warn, info, debug, trace (default info)
    #[argh(option)]
    log_level: Option<String>,
    /// log to syslog instead of stderr
    #[argh(switch)]
    syslog: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    /// write the first 200 queue messages to FILE (for building decoder tests)
    #[argh(option, hidden_help)]
    record_queue: Option<std::path::PathBuf>,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Run(RunCmd),
    Check(CheckCmd),
}

#[derive(FromArgs)]
/// Serve in the foreground (the default).
#[argh(subcommand, name = "run")]
struct RunCmd {}

#[derive(FromArgs)]
/// Tell whether this kernel and process can run the daemon.
#[argh(subcommand, name = "check")]
struct CheckCmd {}

fn main() {
    let _ = cthelperd::daemon::PROCESS_START.set(std::time::Instant::now());
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("cthelperd {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(EXIT_OK);
    }
    let level = match (&cli.log_level, cli.verbose) {
        (Some(l), _) => match logging::parse_level(l) {
            Some(level) => level,
            None => {
                eprintln!(
                    "cthelperd: error: unknown log level {l:?} (error, warn, info, debug, trace)"
                );
                std::process::exit(EXIT_USAGE);
            }
        },
        (None, true) => LevelFilter::Debug,
        (None, false) => LevelFilter::Info,
    };
    let code = match cli.command {
        Some(Command::Check(_)) => run_check(),
        Some(Command::Run(_)) | None => {
            logging::init(level, cli.syslog);
            run_daemon(cli.record_queue.as_deref())
        }
    };
    std::process::exit(code);
}

fn run_daemon(record: Option<&std::path::Path>) -> i32 {
    let cfg = Config::default();
    match Daemon::start(cfg) {
        Ok(mut d) => {
            if let Some(path) = record {
                match Recorder::create(path, 200) {
                    Ok(r) => d.set_recorder(r),
                    Err(e) => {
                        error!("cannot create {}: {e}", path.display());
                        return EXIT_USAGE;
                    }
                }
            }
            d.run()
        }
        Err(e) => {
            error!("{e}");
            EXIT_RUNTIME
        }
    }
}

fn run_check() -> i32 {
    let findings = check::run();
    let mut all_ok = true;
    for f in &findings {
        all_ok &= f.ok;
        println!(
            "{:<4} {:<22} {}",
            if f.ok { "ok" } else { "FAIL" },
            f.what,
            f.detail
        );
    }
    if all_ok {
        println!("this kernel can run cthelperd");
        EXIT_OK
    } else {
        println!("this kernel cannot run cthelperd (see FAIL lines)");
        EXIT_RUNTIME
    }
}
