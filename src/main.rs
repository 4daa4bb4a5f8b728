//! cthelperd command line.
#![deny(unsafe_code)]

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
    /// configuration file (default /etc/config/cthelperd; built-in defaults when
    /// that does not exist)
    #[argh(option)]
    config: Option<std::path::PathBuf>,
    /// status socket (default /var/run/cthelperd.sock)
    #[argh(option)]
    control_socket: Option<std::path::PathBuf>,
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
    Replay(ReplayCmd),
    CheckConfig(CheckConfigCmd),
    Status(StatusCmd),
}

#[derive(FromArgs)]
/// Validate a configuration file and print the effective configuration (exit 2 on
/// an error).
#[argh(subcommand, name = "check-config")]
struct CheckConfigCmd {
    /// the file (default /etc/config/cthelperd, built-in defaults if missing)
    #[argh(positional)]
    file: Option<std::path::PathBuf>,
}

#[derive(FromArgs)]
/// Print the running daemon's counters.
#[argh(subcommand, name = "status")]
struct StatusCmd {
    /// status socket (default /var/run/cthelperd.sock)
    #[argh(option)]
    control_socket: Option<std::path::PathBuf>,
}

#[derive(FromArgs)]
/// Serve in the foreground (the default).
#[argh(subcommand, name = "run")]
struct RunCmd {}

#[derive(FromArgs)]
/// Replay a pcap/pcapng capture through the helpers and print the expectations (and
/// refused announcements) they would have asked for, one per line.
#[argh(subcommand, name = "replay")]
struct ReplayCmd {
    /// the capture file (pcap or pcapng; Ethernet, Linux cooked, raw IP)
    #[argh(positional)]
    file: std::path::PathBuf,
    /// print JSON lines instead of text
    #[argh(switch)]
    json: bool,
    /// also assign helper NAME to connections to PORT, e.g. ftp:2121 (repeatable;
    /// ftp on tcp/21 and tftp on udp/69 are always assigned)
    #[argh(option)]
    helper: Vec<String>,
}

#[derive(FromArgs)]
/// Tell whether this kernel and process can run the daemon.
#[argh(subcommand, name = "check")]
struct CheckCmd {}

fn main() {
    // First of all: a SIGHUP or SIGTERM during start-up must not kill the daemon
    // (procd sends SIGHUP on reload whenever it likes); the poll loop handles them.
    let blocked = cthelperd::daemon::block_signals();
    let _ = cthelperd::daemon::PROCESS_START.set(std::time::Instant::now());
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("cthelperd {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(EXIT_OK);
    }
    let level = match (&cli.log_level, cli.verbose) {
        (Some(l), _) => match logging::parse_level(l) {
            Some(level) => Some(level),
            None => {
                eprintln!(
                    "cthelperd: error: unknown log level {l:?} (error, warn, info, debug, trace)"
                );
                std::process::exit(EXIT_USAGE);
            }
        },
        (None, true) => Some(LevelFilter::Debug),
        (None, false) => None,
    };
    if !matches!(cli.command, Some(Command::Run(_)) | None) {
        let _ = cthelperd::daemon::unblock_signals();
    } else if let Err(e) = blocked {
        eprintln!("cthelperd: error: cannot block signals: {e}");
        std::process::exit(EXIT_RUNTIME);
    }
    let code = match cli.command {
        Some(Command::Check(_)) => run_check(),
        Some(Command::Replay(r)) => run_replay(&r),
        Some(Command::CheckConfig(c)) => run_check_config(c.file.as_deref()),
        Some(Command::Status(c)) => run_status(c.control_socket.or(cli.control_socket)),
        Some(Command::Run(_)) | None => {
            // Logging first, so that a configuration error goes where every other line
            // goes (syslog under procd: the init script passes --syslog).
            logging::init(level.unwrap_or(LevelFilter::Info), cli.syslog);
            let cfg = match Config::load(cli.config.as_deref()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    error!("{e}");
                    std::process::exit(EXIT_USAGE);
                }
            };
            // The command line wins over the file.
            logging::init(level.unwrap_or(cfg.log_level), cli.syslog || cfg.syslog);
            log::debug!(
                "configuration: {} helper sections, queue_base {}",
                cfg.helpers.len(),
                cfg.queue_base
            );
            if !cfg.enabled {
                log::info!("disabled in the configuration (globals.enabled '0'); exiting");
                std::process::exit(EXIT_OK);
            }
            let opts = cthelperd::daemon::Options {
                config_path: cli.config.clone(),
                control_socket: Some(
                    cli.control_socket
                        .unwrap_or_else(|| cthelperd::status::DEFAULT_SOCKET.into()),
                ),
                cli_log_level: level.is_some(),
                ..Default::default()
            };
            run_daemon(cfg, opts, cli.record_queue.as_deref())
        }
    };
    std::process::exit(code);
}

fn run_daemon(
    cfg: Config,
    opts: cthelperd::daemon::Options,
    record: Option<&std::path::Path>,
) -> i32 {
    match Daemon::start_with(cfg, opts) {
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

fn run_check_config(file: Option<&std::path::Path>) -> i32 {
    match Config::load(file) {
        Ok(cfg) => {
            print!("{}", cfg.to_uci());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("cthelperd: error: {e}");
            EXIT_USAGE
        }
    }
}

fn run_status(socket: Option<std::path::PathBuf>) -> i32 {
    let path = socket.unwrap_or_else(|| cthelperd::status::DEFAULT_SOCKET.into());
    match cthelperd::status::query(&path) {
        Ok(report) => {
            print!("{report}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("cthelperd: {e}");
            EXIT_RUNTIME
        }
    }
}

#[cfg(feature = "replay")]
fn run_replay(r: &ReplayCmd) -> i32 {
    cthelperd::replay::cli::run(&r.file, r.json, &r.helper)
}

#[cfg(not(feature = "replay"))]
fn run_replay(r: &ReplayCmd) -> i32 {
    let _ = (&r.file, r.json, &r.helper);
    eprintln!("cthelperd: error: built without replay support (cargo feature \"replay\")");
    EXIT_USAGE
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
