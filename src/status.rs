//! `cthelperd status`: the daemon answers on a unix stream socket (default
//! /var/run/cthelperd.sock) with a short text report of its fixed-size counters and
//! the kernel's queue counters, then closes. The socket is polled in the daemon's
//! loop next to the queue socket; a report is at most `REPORT_MAX` bytes.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::config::{Families, Protos};

pub const DEFAULT_SOCKET: &str = "/var/run/cthelperd.sock";
pub const REPORT_MAX: usize = 4096;
/// How long `cthelperd status` waits for the daemon's report.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most bytes `cthelperd status` reads (a report is at most REPORT_MAX).
const QUERY_MAX: u64 = 64 * 1024;
const PROC_QUEUES: &str = "/proc/net/netfilter/nfnetlink_queue";

/// The counters the daemon keeps per helper (fixed size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelperCounters {
    pub packets: u64,
    pub expectations: u64,
    pub expectation_errors: u64,
    pub refused: u64,
    pub parse_errors: u64,
    /// Packets sent back with rewritten announcements (NAT).
    pub rewritten: u64,
    /// Announcements that needed a rewrite and did not get one: the packet was dropped
    /// (no expectation for it, the rewrite could not be made, or an IPv6 sequence
    /// adjustment failed).
    pub rewrite_errors: u64,
    /// Expectations deleted again because the packet announcing them was dropped.
    pub withdrawn: u64,
    /// Pending expectations deleted at a helper's request (BYE, CANCEL, re-INVITE).
    pub deleted: u64,
    /// Packets of expected connections (that inherited the helper from their master)
    /// accepted without analysis: the kernel's doing, not the helper's work, so apart
    /// from `packets`.
    pub expected_passed: u64,
    /// SIP messages that needed a NAT rewrite and passed unchanged (split across TCP
    /// segments already sent, or too many rewrites): nothing they announced through
    /// the NAT was opened.
    pub unrewritten: u64,
}

/// TCP reassembly counters of a helper with stream buffers (SIP, helpers/sip/stream.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Partial messages that found no free buffer or outgrew theirs.
    pub overflows: u64,
    /// Stream positions lost (gaps, overflows, malformed messages): that direction of
    /// the connection is not parsed again.
    pub lost: u64,
}

/// One helper's line of the report.
pub struct HelperLine<'a> {
    pub name: &'a str,
    pub families: Families,
    pub protos: Protos,
    pub queue: u16,
    pub counters: HelperCounters,
    /// Entries of the helper's store pushed out by newer ones (helpers/store.rs).
    pub store_evictions: u64,
    /// Only for a helper that reassembles TCP streams.
    pub streams: Option<StreamCounters>,
}

impl HelperLine<'_> {
    /// The counters as `name value` pairs: the report's helper lines and the daemon's
    /// final log line say the same.
    pub fn counters(&self) -> impl core::fmt::Display + '_ {
        CountersText(self)
    }
}

struct CountersText<'a, 'b>(&'a HelperLine<'b>);

impl core::fmt::Display for CountersText<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (h, c) = (self.0, &self.0.counters);
        write!(
            f,
            "packets {} expectations {} expectation_errors {} deleted {} refused {} parse_errors {} store_evictions {} rewritten {} rewrite_errors {} withdrawn {} expected_passed {}",
            c.packets,
            c.expectations,
            c.expectation_errors,
            c.deleted,
            c.refused,
            c.parse_errors,
            h.store_evictions,
            c.rewritten,
            c.rewrite_errors,
            c.withdrawn,
            c.expected_passed
        )?;
        if let Some(s) = h.streams {
            write!(
                f,
                " stream_overflows {} stream_lost {} unrewritten {}",
                s.overflows, s.lost, c.unrewritten
            )?;
        }
        Ok(())
    }
}

/// The daemon-wide counters.
pub struct Globals {
    pub verdict_errors: u64,
    pub passed_without_helper: u64,
    /// Packets run with the private data this daemon wrote last instead of the older
    /// copy the kernel queued them with (private_cache.rs).
    pub private_cache_used: u64,
    /// Live private-data cache entries pushed out by another conntrack.
    pub private_cache_evictions: u64,
}

/// One queue as /proc/net/netfilter/nfnetlink_queue shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLine {
    pub queue: u16,
    pub portid: u32,
    pub total: u64,
    pub dropped: u64,
    pub user_dropped: u64,
    pub id_sequence: u64,
}

/// Parse one line of /proc/net/netfilter/nfnetlink_queue: queue_num portid
/// queue_total copy_mode copy_range queue_dropped queue_user_dropped id_sequence 1.
pub fn parse_proc_line(line: &str) -> Option<QueueLine> {
    let mut f = line.split_ascii_whitespace();
    let mut next = || f.next();
    let queue = next()?.parse().ok()?;
    let portid = next()?.parse().ok()?;
    let total = next()?.parse().ok()?;
    let _copy_mode = next()?;
    let _copy_range = next()?;
    let dropped = next()?.parse().ok()?;
    let user_dropped = next()?.parse().ok()?;
    let id_sequence = next()?.parse().ok()?;
    Some(QueueLine {
        queue,
        portid,
        total,
        dropped,
        user_dropped,
        id_sequence,
    })
}

/// A `Write` into a fixed buffer that cuts off at its end (the report is bounded).
struct Fixed<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Fixed<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Write the report into `buf`; returns its length. `proc_queues` is the text of
/// /proc/net/netfilter/nfnetlink_queue (None: unreadable); only our queues are
/// shown.
pub fn report(
    buf: &mut [u8],
    helpers: &[HelperLine<'_>],
    globals: &Globals,
    proc_queues: Option<&str>,
) -> usize {
    let mut w = Fixed { buf, len: 0 };
    let _ = writeln!(
        w,
        "cthelperd {} pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    for h in helpers {
        let fam = match h.families {
            Families::Any => "ipv4+ipv6",
            f => f.as_str(),
        };
        let _ = writeln!(
            w,
            "helper {} family {} proto {} queue {}: {}",
            h.name,
            fam,
            h.protos.label(),
            h.queue,
            h.counters()
        );
    }
    let _ = writeln!(
        w,
        "global: verdict_errors {} passed_without_helper {} private_cache_used {} private_cache_evictions {}",
        globals.verdict_errors,
        globals.passed_without_helper,
        globals.private_cache_used,
        globals.private_cache_evictions
    );
    let mut queues: heapless::Vec<u16, { crate::config::MAX_HELPERS }> = heapless::Vec::new();
    for h in helpers {
        if !queues.contains(&h.queue) {
            let _ = queues.push(h.queue);
        }
    }
    for q in &queues {
        match proc_queues.map(|t| {
            t.lines()
                .filter_map(parse_proc_line)
                .find(|l| l.queue == *q)
        }) {
            Some(Some(l)) => {
                let _ = writeln!(
                    w,
                    "queue {}: queue_total {} queue_dropped {} queue_user_dropped {} id_sequence {}",
                    l.queue, l.total, l.dropped, l.user_dropped, l.id_sequence
                );
            }
            Some(None) => {
                let _ = writeln!(w, "queue {q}: not bound in the kernel");
            }
            None => {
                let _ = writeln!(w, "queue {q}: {PROC_QUEUES} unreadable");
            }
        }
    }
    w.len
}

/// Read /proc/net/netfilter/nfnetlink_queue (of the caller's network namespace)
/// into `buf`.
pub fn read_proc_queues(buf: &mut [u8]) -> Option<&str> {
    let mut f = std::fs::File::open(PROC_QUEUES).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    std::str::from_utf8(&buf[..len]).ok()
}

/// The daemon's end of the status socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Bind `path`. A stale socket file (left by a killed daemon) is replaced; one
    /// that a live process answers on is not.
    pub fn bind(path: &Path) -> Result<Server, String> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "{} is in use by another running process",
                    path.display()
                ));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener =
            UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Answer every pending connection with `report` (non-blocking: a report fits
    /// in a fresh socket's send buffer; a client that is not reading loses it).
    pub fn serve(&self, report: &[u8]) -> usize {
        let mut served = 0;
        while let Ok((mut stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(true);
            let _ = stream.write_all(report);
            served += 1;
        }
        served
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The `cthelperd status` client: the report, or why there is none.
pub fn query(path: &Path) -> Result<String, String> {
    let s = UnixStream::connect(path).map_err(|e| {
        format!(
            "the daemon is not running (cannot connect to {}: {e}; start it: service cthelperd start)",
            path.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(QUERY_TIMEOUT));
    let mut out = String::new();
    s.take(QUERY_MAX)
        .read_to_string(&mut out)
        .map_err(|e| format!("reading the status from {}: {e}", path.display()))?;
    if out.is_empty() {
        return Err(format!("no answer on {}", path.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "    0   4021     0 2 65535     0     0       42  1\n    1   4021     3 2 65535     7     2      118  1\n";

    #[test]
    fn proc_lines_parse() {
        assert_eq!(
            parse_proc_line(PROC.lines().nth(1).unwrap()),
            Some(QueueLine {
                queue: 1,
                portid: 4021,
                total: 3,
                dropped: 7,
                user_dropped: 2,
                id_sequence: 118
            })
        );
        assert_eq!(parse_proc_line("garbage"), None);
        assert_eq!(parse_proc_line(""), None);
    }

    fn line(name: &str, queue: u16, packets: u64) -> HelperLine<'_> {
        HelperLine {
            name,
            families: Families::Any,
            protos: Protos::TCP,
            queue,
            counters: HelperCounters {
                packets,
                expectations: 2,
                refused: 1,
                rewritten: 3,
                ..HelperCounters::default()
            },
            store_evictions: 0,
            streams: None,
        }
    }

    #[test]
    fn report_lists_helpers_globals_and_our_queues() {
        let mut buf = [0u8; REPORT_MAX];
        let g = Globals {
            verdict_errors: 0,
            passed_without_helper: 5,
            private_cache_used: 4,
            private_cache_evictions: 1,
        };
        let n = report(
            &mut buf,
            &[
                line("ftp", 1, 9),
                HelperLine {
                    // a helper registered for both protocols
                    protos: Protos::TCP_UDP,
                    counters: HelperCounters {
                        deleted: 4,
                        unrewritten: 8,
                        ..line("x", 3, 0).counters
                    },
                    store_evictions: 5,
                    streams: Some(StreamCounters {
                        overflows: 6,
                        lost: 7,
                    }),
                    ..line("x", 3, 0)
                },
            ],
            &g,
            Some(PROC),
        );
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let lines: Vec<_> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            vec![
                "helper ftp family ipv4+ipv6 proto tcp queue 1: packets 9 expectations 2 expectation_errors 0 deleted 0 refused 1 parse_errors 0 store_evictions 0 rewritten 3 rewrite_errors 0 withdrawn 0 expected_passed 0",
                "helper x family ipv4+ipv6 proto tcp+udp queue 3: packets 0 expectations 2 expectation_errors 0 deleted 4 refused 1 parse_errors 0 store_evictions 5 rewritten 3 rewrite_errors 0 withdrawn 0 expected_passed 0 stream_overflows 6 stream_lost 7 unrewritten 8",
                "global: verdict_errors 0 passed_without_helper 5 private_cache_used 4 private_cache_evictions 1",
                "queue 1: queue_total 3 queue_dropped 7 queue_user_dropped 2 id_sequence 118",
                "queue 3: not bound in the kernel",
            ]
        );
        let n = report(&mut buf[..20], &[line("ftp", 1, 9)], &g, None);
        assert_eq!(n, 20, "cut at the buffer's end, no panic");
    }

    #[test]
    fn socket_round_trip_and_cleanup() {
        let dir = std::env::temp_dir().join(format!("cthelperd-ctl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let err = query(&path).unwrap_err();
        assert!(err.contains("not running"), "{err}");
        // main() prefixes "cthelperd: "; the message must not repeat the name.
        assert!(!err.contains("cthelperd is"), "{err}");
        let server = Server::bind(&path).unwrap();
        assert!(Server::bind(&path).unwrap_err().contains("in use"));
        let client = std::thread::spawn({
            let path = path.clone();
            move || query(&path)
        });
        // (the "in use" probe above is served too; it has gone already)
        for _ in 0..300 {
            server.serve(b"hello\n");
            if client.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(client.join().unwrap().unwrap(), "hello\n");
        drop(server);
        assert!(!path.exists());
        // a stale file (daemon killed) is replaced
        std::fs::write(&path, b"").unwrap();
        let _server = Server::bind(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
