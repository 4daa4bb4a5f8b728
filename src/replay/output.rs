//! Text and JSON-lines rendering of replay events. JSON is written by hand (no
//! serializer dependency for a handful of flat objects); every string goes through
//! [`json_string`].

use core::fmt::Write;
use core::net::IpAddr;

use super::{Event, EventKind, Summary};
use crate::helpers::RefusalReason;
use crate::model::{IPPROTO_TCP, IPPROTO_UDP, Tuple};

pub fn proto_name(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        _ => "other",
    }
}

fn reason_text(r: RefusalReason) -> &'static str {
    match r {
        RefusalReason::ThirdPartyAddress => "third-party address",
        RefusalReason::BadPort => "bad port",
        RefusalReason::LowPort => "port below 1024 on a port forward",
    }
}

/// `addr:port`, with IPv6 addresses in brackets so the port stays readable.
fn endpoint(addr: IpAddr, port: &dyn core::fmt::Display) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Seconds with microseconds, e.g. `12.000345` or `-0.000010`.
pub fn seconds(ns: i128) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let us = ns.unsigned_abs() / 1000;
    format!("{sign}{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// RFC 3339 UTC timestamp with microseconds, e.g. `2016-07-13T17:06:48.123456Z`.
pub fn rfc3339(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let us = (ts_ns % 1_000_000_000) / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm), in i64 so the
    // whole u64 range of seconds (days < 2^47) cannot overflow.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{us:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn master_text(t: &Tuple) -> String {
    format!(
        "{} -> {} {}",
        endpoint(t.src, &t.src_port),
        endpoint(t.dst, &t.dst_port),
        proto_name(t.proto)
    )
}

/// One text line (without the newline):
/// `<time> <helper> <master> expect <proto> <src>:any -> <dst>:<dport>` or
/// `<time> <helper> <master> refused <WHAT> <announced>:<port> from <sender> (<reason>)`.
pub fn text_line(ev: &Event) -> String {
    let mut s = format!(
        "{} {} {} ",
        seconds(ev.rel_ns),
        ev.helper,
        master_text(&ev.master)
    );
    match &ev.kind {
        EventKind::Expect(x) => {
            let sport: &dyn core::fmt::Display = match &x.src_port {
                Some(p) => p,
                None => &"any",
            };
            let _ = write!(
                s,
                "expect {} {} -> {}",
                proto_name(x.proto),
                endpoint(x.src, sport),
                endpoint(x.dst, &x.dst_port)
            );
        }
        EventKind::Refused(r) => {
            let _ = write!(
                s,
                "refused {} {} from {} ({})",
                r.what,
                endpoint(r.announced, &r.port),
                r.sender,
                reason_text(r.reason)
            );
        }
    }
    if ev.retransmission {
        s.push_str(" [retransmission]");
    }
    s
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn ip_json(a: IpAddr) -> String {
    json_string(&a.to_string())
}

/// One JSON object (without the newline). Fields: time (s since the first packet),
/// ts (RFC 3339), frame, helper, master{proto,src,sport,dst,dport}, then
/// expect{proto,src,sport,dst,dport,class} or refused{what,address,port,sender,reason},
/// and retransmission.
pub fn json_line(ev: &Event) -> String {
    let m = &ev.master;
    let mut s = format!(
        "{{\"time\":{},\"ts\":{},\"frame\":{},\"helper\":{},\"master\":{{\"proto\":{},\"src\":{},\"sport\":{},\"dst\":{},\"dport\":{}}},",
        seconds(ev.rel_ns),
        json_string(&rfc3339(ev.ts_ns)),
        ev.frame,
        json_string(ev.helper),
        json_string(proto_name(m.proto)),
        ip_json(m.src),
        m.src_port,
        ip_json(m.dst),
        m.dst_port
    );
    match &ev.kind {
        EventKind::Expect(x) => {
            let _ = write!(
                s,
                "\"expect\":{{\"proto\":{},\"src\":{},\"sport\":{},\"dst\":{},\"dport\":{},\"class\":{}}}",
                json_string(proto_name(x.proto)),
                ip_json(x.src),
                x.src_port
                    .map_or_else(|| "null".to_string(), |p| p.to_string()),
                ip_json(x.dst),
                x.dst_port,
                x.class
            );
        }
        EventKind::Refused(r) => {
            let _ = write!(
                s,
                "\"refused\":{{\"what\":{},\"address\":{},\"port\":{},\"sender\":{},\"reason\":{}}}",
                json_string(r.what),
                ip_json(r.announced),
                r.port,
                ip_json(r.sender),
                json_string(reason_text(r.reason))
            );
        }
    }
    let _ = write!(s, ",\"retransmission\":{}}}", ev.retransmission);
    s
}

/// Frames listed in a summary line, at most this many (then "...").
const FRAMES_LISTED: usize = 10;

fn frame_list(frames: &[usize]) -> String {
    let mut s = String::new();
    for (i, f) in frames.iter().take(FRAMES_LISTED).enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{f}");
    }
    if frames.len() > FRAMES_LISTED {
        s.push_str(", ...");
    }
    s
}

/// Summary lines for text output, each starting with `# ` so that line-oriented tools
/// can tell them from events: the capture, then one line per helper that saw packets
/// (with its parse-error count and first frames).
pub fn text_summary(s: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    let mut skipped = Vec::new();
    if s.non_ip > 0 {
        skipped.push(format!("{} non-IP", s.non_ip));
    }
    if s.other_protocols > 0 {
        skipped.push(format!("{} neither TCP nor UDP", s.other_protocols));
    }
    if !s.fragments.is_empty() {
        let why: Vec<String> = s
            .fragments_dropped
            .by_reason()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| format!("{n} {}", reason.replace('_', " ")))
            .collect();
        skipped.push(format!(
            "{} IP fragments never reassembled ({}; frames {})",
            s.fragments.len(),
            why.join(", "),
            frame_list(&s.fragments)
        ));
    }
    if !s.malformed.is_empty() {
        skipped.push(format!(
            "{} malformed or cut short (frames {})",
            s.malformed.len(),
            frame_list(&s.malformed)
        ));
    }
    let mut line = format!(
        "# {} frames, {} TCP/UDP packets, {} connections",
        s.frames, s.packets, s.connections
    );
    if s.reassembled > 0 {
        let _ = write!(line, "; {} IP datagrams reassembled", s.reassembled);
    }
    if s.decapsulated > 0 {
        let _ = write!(line, "; {} packets out of tunnels", s.decapsulated);
    }
    if !skipped.is_empty() {
        let _ = write!(line, "; not replayed: {}", skipped.join(", "));
    }
    lines.push(line);
    for h in s.helpers.iter().filter(|h| h.packets > 0) {
        let mut line = format!(
            "# {}: {} connections, {} packets, {} expectations, {} refused, {} parse errors",
            h.name,
            h.connections,
            h.packets,
            h.expectations,
            h.refused,
            h.parse_errors.len()
        );
        if !h.parse_errors.is_empty() {
            let _ = write!(line, " (frames {})", frame_list(&h.parse_errors));
        }
        lines.push(line);
    }
    lines
}

fn json_frames(frames: &[usize]) -> String {
    let list: Vec<String> = frames.iter().map(usize::to_string).collect();
    format!("[{}]", list.join(","))
}

/// The summary as one JSON object `{"summary":{...}}`.
pub fn json_summary(s: &Summary) -> String {
    let helpers: Vec<String> = s
        .helpers
        .iter()
        .map(|h| {
            format!(
                "{{\"helper\":{},\"connections\":{},\"packets\":{},\"expectations\":{},\"refused\":{},\"parse_errors\":{},\"parse_error_frames\":{}}}",
                json_string(h.name),
                h.connections,
                h.packets,
                h.expectations,
                h.refused,
                h.parse_errors.len(),
                json_frames(&h.parse_errors)
            )
        })
        .collect();
    let dropped: Vec<String> = s
        .fragments_dropped
        .by_reason()
        .iter()
        .map(|(reason, n)| format!("{}:{n}", json_string(reason)))
        .collect();
    format!(
        "{{\"summary\":{{\"frames\":{},\"packets\":{},\"connections\":{},\"non_ip\":{},\"other_protocols\":{},\"reassembled\":{},\"decapsulated\":{},\"fragments\":{},\"fragments_dropped\":{{{}}},\"malformed\":{},\"helpers\":[{}]}}}}",
        s.frames,
        s.packets,
        s.connections,
        s.non_ip,
        s.other_protocols,
        s.reassembled,
        s.decapsulated,
        json_frames(&s.fragments),
        dropped.join(","),
        json_frames(&s.malformed),
        helpers.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("ftp"), "\"ftp\"");
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}\u{2028}é"),
            "\"a\\\"b\\\\c\\nd\\u0001\\u2028é\""
        );
    }

    #[test]
    fn times() {
        assert_eq!(seconds(0), "0.000000");
        assert_eq!(seconds(12_000_345_999), "12.000345");
        assert_eq!(seconds(-10_000), "-0.000010");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_468_429_608_123_456_789),
            "2016-07-13T17:06:48.123456Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        // Must not panic anywhere in the range.
        let _ = rfc3339(u64::MAX);
    }
}
