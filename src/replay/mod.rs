//! Capture replay: what expectations would the helpers have created for this traffic?
//!
//! A capture's frames become the IP packets conntrack sees on a router that terminates
//! the capture's tunnels ([`ingress`]: IP fragments reassembled, GRE, IP-in-IP and GTP-U
//! opened). Packets are grouped into connections the way conntrack would (5-tuple,
//! original direction from the first packet, a SYN when there is one), helpers are
//! assigned the way a firewall rule does it (`tcp dport 21 ct helper set "ftp"`: by the
//! original destination port), and every packet of a helped connection goes through
//! [`helpers::run`], the function the daemon calls for a queued packet, with the
//! conntrack view (tuples, CONFIRMED / SEEN_REPLY) the kernel would hand over at that
//! packet and the private data the kernel would have stored from the previous verdict.
//! There is no second implementation of any helper here.
//!
//! Behind the default-on cargo feature `replay`; router builds leave it out.

pub mod capture;
pub mod cli;
pub mod ingress;
pub mod output;
pub mod reassembly;
pub mod tunnel;

use std::collections::HashMap;

use core::net::IpAddr;

use crate::config::Config;
use crate::helpers::registry::{self, Builtin};
use crate::helpers::{self, PRIVATE_DATA_MAX, Packet, Refusal, Transport};
use crate::model::{Conntrack, Direction, Expectation, IPPROTO_TCP, Tuple, status};
use crate::wire::{self, tcp};

/// A helper assignment: connections whose original destination is `proto`/`port` get
/// `builtin`, like `<proto> dport <port> ct helper set "<name>"`.
#[derive(Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub builtin: &'static Builtin,
    pub proto: u8,
    pub port: u16,
    /// The helper's configured policy (`allow_low_ports`), as the daemon would apply it.
    pub policy: helpers::Policy,
}

impl core::fmt::Debug for Rule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} {} dport {}",
            self.name,
            output::proto_name(self.proto),
            self.port
        )
    }
}

/// The rules the default firewall wiring installs: every enabled helper of `cfg` on
/// each of its protocols and well-known ports.
pub fn rules_from_config(cfg: &Config) -> Vec<Rule> {
    let mut rules = Vec::new();
    for h in cfg.helpers.iter().filter(|h| h.enabled) {
        for proto in h.protos.iter() {
            for &port in &h.ports {
                rules.push(Rule {
                    name: h.name(),
                    builtin: h.builtin,
                    proto,
                    port,
                    policy: h.policy(),
                });
            }
        }
    }
    rules
}

/// Parse `NAME:PORT` (e.g. `ftp:2121`): the built-in helper NAME on PORT, one rule per
/// transport protocol that helper is configured for.
pub fn parse_rule(spec: &str, cfg: &Config) -> Result<Vec<Rule>, String> {
    let (name, port) = spec
        .split_once(':')
        .ok_or_else(|| format!("--helper {spec:?}: expected NAME:PORT, e.g. ftp:2121"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("--helper {spec:?}: port must be 1-65535"))?;
    let builtin = registry::find(name)
        .ok_or_else(|| format!("--helper {spec:?}: no built-in helper named {name:?}"))?;
    // The configured section's protocols and policy, else the helper's own defaults (a
    // helper not in the configuration, such as SIP while it is off by default).
    let (protos, policy) = match cfg.helpers.iter().find(|h| h.builtin == builtin) {
        Some(h) => (h.protos, h.policy()),
        None => (builtin.protos, helpers::Policy::default()),
    };
    Ok(protos
        .iter()
        .map(|proto| Rule {
            name: builtin.name,
            builtin,
            proto,
            port,
            policy,
        })
        .collect())
}

/// What a helper asked for at one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Expect(Expectation),
    Refused(Refusal),
}

/// One expectation or refused announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// 1-based frame number in the capture.
    pub frame: usize,
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Nanoseconds since the capture's first record (negative if the capture's clock
    /// went backwards).
    pub rel_ns: i128,
    pub helper: &'static str,
    /// The master connection's original tuple.
    pub master: Tuple,
    /// The segment carried no byte that an earlier segment in its direction had not
    /// already carried (a TCP retransmission, or the same packet captured twice). The
    /// kernel parses it again, so the expectation is asked for again; it is the same
    /// announcement, not a new one.
    pub retransmission: bool,
    pub kind: EventKind,
}

/// Counters of one helper over a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelperSummary {
    pub name: &'static str,
    pub connections: usize,
    pub packets: usize,
    pub expectations: usize,
    pub refused: usize,
    /// Frames at which the helper reported a parse error.
    pub parse_errors: Vec<usize>,
}

/// What a replay looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub frames: usize,
    /// TCP and UDP packets (dissected and grouped into connections).
    pub packets: usize,
    pub connections: usize,
    /// Frames without IPv4/IPv6 (ARP, other link types).
    pub non_ip: usize,
    /// IP packets neither TCP nor UDP.
    pub other_protocols: usize,
    /// IP datagrams reassembled from fragments (each replayed at the frame of the
    /// fragment that completed it), as the kernel does before conntrack.
    pub reassembled: usize,
    /// Packets taken out of tunnels (GRE, IP-in-IP, GTP-U) and replayed instead of the
    /// tunnel packet.
    pub decapsulated: usize,
    /// Frames of IP fragments that never became part of a replayed datagram, in frame
    /// order (why: `fragments_dropped`).
    pub fragments: Vec<usize>,
    /// Those fragments by reason.
    pub fragments_dropped: reassembly::Dropped,
    /// Frames whose IP/TCP/UDP headers are broken or cut short (the kernel would drop
    /// them before conntrack; the daemon never sees a truncated packet either).
    pub malformed: Vec<usize>,
    pub helpers: Vec<HelperSummary>,
}

type Endpoint = (IpAddr, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    proto: u8,
    lo: Endpoint,
    hi: Endpoint,
}

struct Conn {
    ct: Conntrack,
    /// Index into the rules: the helper assigned when the conntrack was created.
    rule: Option<usize>,
    /// The private area as the kernel stores it; `None` until a verdict wrote one.
    private: Option<[u8; PRIVATE_DATA_MAX]>,
    /// ISN of the SYN that opened the connection, to tell a new connection on the same
    /// 5-tuple (port reuse) from a retransmitted SYN.
    isn: Option<u32>,
    /// Per direction, one past the highest TCP sequence number seen.
    seq_end: [Option<u32>; DIRECTIONS],
}

/// A connection's directions (original, reply), indexed by `Direction::index`.
const DIRECTIONS: usize = 2;

/// Is `a` after `b` in TCP sequence space?
fn seq_after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

/// Runs the helpers over capture records one at a time (so a caller can stream output
/// and still report a read error at the record where it happened).
pub struct Replayer<'r> {
    rules: &'r [Rule],
    /// Each helper's store, by name, as the daemon keeps one per configured helper.
    stores: Vec<(&'static str, helpers::Store)>,
    conns: HashMap<ConnKey, Conn>,
    /// Reassembly and tunnels: what conntrack gets of each frame.
    ingress: ingress::Ingress,
    /// Fragments the reassembler did not take (counted as invalid).
    stray_fragments: usize,
    /// The id the next conntrack gets (the kernel's CTA_ID): helpers key their store
    /// and reassembly buffers by it, so two connections must not share one.
    next_id: u32,
    first_ts: Option<u64>,
    summary: Summary,
}

impl<'r> Replayer<'r> {
    pub fn new(rules: &'r [Rule]) -> Replayer<'r> {
        let mut summary = Summary::default();
        let mut stores: Vec<(&'static str, helpers::Store)> = Vec::new();
        for r in rules {
            if !stores.iter().any(|(name, _)| *name == r.name) {
                stores.push((r.name, helpers::Store::for_helper(r.builtin)));
            }
            if !summary.helpers.iter().any(|h| h.name == r.name) {
                summary.helpers.push(HelperSummary {
                    name: r.name,
                    ..HelperSummary::default()
                });
            }
        }
        Replayer {
            rules,
            stores,
            conns: HashMap::new(),
            ingress: ingress::Ingress::new(),
            stray_fragments: 0,
            next_id: 1,
            first_ts: None,
            summary,
        }
    }

    /// What the replay looked at so far (fragments still waiting for the rest of their
    /// datagram are in no count until [`Replayer::finish`]).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The end of the capture: fragments still waiting for the rest of their datagram
    /// are counted as dropped (incomplete). Returns the final summary.
    pub fn finish(&mut self) -> &Summary {
        self.ingress.finish();
        self.sync_ingress();
        &self.summary
    }

    /// Copy the reassembly and tunnel counters into the summary.
    fn sync_ingress(&mut self) {
        self.summary.reassembled = self.ingress.reassembled();
        self.summary.decapsulated = self.ingress.decapsulated();
        self.summary.fragments_dropped = self.ingress.dropped();
        self.summary.fragments_dropped.invalid += self.stray_fragments;
        let dropped = self.ingress.take_dropped_frames();
        if !dropped.is_empty() {
            self.summary.fragments.extend(dropped);
            // Evictions and timeouts drop earlier frames after later ones.
            self.summary.fragments.sort_unstable();
        }
    }

    /// Timestamp of the first record, the origin of `Event::rel_ns`.
    pub fn first_ts(&self) -> Option<u64> {
        self.first_ts
    }

    fn helper_summary(&mut self, name: &str) -> Option<&mut HelperSummary> {
        self.summary.helpers.iter_mut().find(|h| h.name == name)
    }

    /// The rule a new connection with this original tuple gets.
    fn rule_for(&self, orig: &Tuple) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.proto == orig.proto && r.port == orig.dst_port)
    }

    fn is_helped_port(&self, proto: u8, port: u16) -> bool {
        self.rules
            .iter()
            .any(|r| r.proto == proto && r.port == port)
    }

    /// Replay one capture record; its expectations and refusals are appended to `out`.
    pub fn record(&mut self, rec: &capture::Record<'_>, out: &mut Vec<Event>) {
        self.summary.frames += 1;
        let first_ts = *self.first_ts.get_or_insert(rec.ts_ns);
        let seen = self.ingress.frame(rec);
        self.sync_ingress();
        let l3 = match seen {
            ingress::Seen::Packet(l3) => l3,
            ingress::Seen::NotIp => {
                self.summary.non_ip += 1;
                return;
            }
            ingress::Seen::Fragment => return,
        };
        let d = match wire::dissect(&l3) {
            Ok(d) => d,
            Err(wire::Error::UnsupportedProtocol(_)) => {
                self.summary.other_protocols += 1;
                return;
            }
            // A fragment the reassembler could not take (a fragment header inside a
            // reassembled datagram).
            Err(wire::Error::Fragment) => {
                self.summary.fragments.push(rec.number);
                self.stray_fragments += 1;
                self.summary.fragments_dropped.invalid += 1;
                return;
            }
            Err(_) => {
                self.summary.malformed.push(rec.number);
                return;
            }
        };
        self.summary.packets += 1;
        let here: Endpoint = (d.src, d.src_port);
        let there: Endpoint = (d.dst, d.dst_port);
        let key = ConnKey {
            proto: d.proto,
            lo: here.min(there),
            hi: here.max(there),
        };
        let (syn, ack, seq) = match d.transport {
            Transport::Tcp { seq, flags } => (
                flags & tcp::flags::SYN != 0,
                flags & tcp::flags::ACK != 0,
                Some(seq),
            ),
            Transport::Udp => (false, false, None),
        };
        // A SYN with a new ISN on a known 5-tuple is a new connection (port reuse); the
        // kernel replaces a closed conntrack the same way.
        let reused = syn && !ack && self.conns.get(&key).is_some_and(|c| c.isn != seq);
        if reused || !self.conns.contains_key(&key) {
            let client_first = if d.proto != IPPROTO_TCP || syn {
                // UDP: whoever sends first is the original direction, as in conntrack.
                // SYN: its sender; SYN/ACK: its receiver.
                !(syn && ack)
            } else if self.is_helped_port(d.proto, d.dst_port)
                != self.is_helped_port(d.proto, d.src_port)
            {
                // No handshake in the capture: the connection existed before it
                // started, so its conntrack (and helper) were set up by the client's
                // first packet to the well-known port, which decides the direction.
                self.is_helped_port(d.proto, d.dst_port)
            } else {
                true
            };
            let (c, s) = if client_first {
                (here, there)
            } else {
                (there, here)
            };
            let orig = Tuple {
                src: c.0,
                dst: s.0,
                proto: d.proto,
                src_port: c.1,
                dst_port: s.1,
            };
            let reply = orig.reversed();
            let rule = self.rule_for(&orig);
            if let Some(name) = rule.and_then(|i| self.rules.get(i)).map(|r| r.name)
                && let Some(h) = self.helper_summary(name)
            {
                h.connections += 1;
            }
            self.summary.connections += 1;
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            self.conns.insert(
                key,
                Conn {
                    ct: Conntrack {
                        orig,
                        reply,
                        // Not yet confirmed: the first packet is seen by the helper
                        // before nf_confirm inserts the conntrack.
                        status: 0,
                        id: Some(id),
                        zone: None,
                    },
                    rule,
                    private: None,
                    isn: if syn && !ack { seq } else { None },
                    seq_end: [None, None],
                },
            );
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let dir = if conn.ct.orig.src == d.src && conn.ct.orig.src_port == d.src_port {
            Direction::Original
        } else {
            // Set by conntrack when the first reply-direction packet passes, before the
            // helper hook sees that packet.
            conn.ct.status |= status::SEEN_REPLY;
            Direction::Reply
        };
        let mut retransmission = false;
        if let Some(seq) = seq
            && !d.payload.is_empty()
        {
            let len = u32::try_from(d.payload.len()).unwrap_or(u32::MAX);
            let end = seq.wrapping_add(len);
            let slot = conn.seq_end.get_mut(dir.index());
            if let Some(slot) = slot {
                match *slot {
                    Some(seen) if !seq_after(end, seen) => retransmission = true,
                    _ => *slot = Some(end),
                }
            }
        }
        let rule = conn.rule.and_then(|i| self.rules.get(i)).copied();
        let mut parse_error = false;
        let mut counts = (0, 0);
        if let Some(rule) = rule {
            let pkt = Packet::from_dissected(dir, &d);
            let info = conn.private.as_ref().map(|p| &p[..]);
            let mut none = helpers::Store::default();
            let store = match self.stores.iter_mut().find(|(name, _)| *name == rule.name) {
                Some((_, store)) => store,
                None => &mut none,
            };
            let run = helpers::run(rule.builtin, &pkt, &conn.ct, info, store, rule.policy);
            if run.plan.private_changed {
                // The daemon sends it back with the verdict; the kernel stores it and
                // hands it over with the connection's next packet.
                let mut stored = [0u8; PRIVATE_DATA_MAX];
                if let Some(dst) = stored.get_mut(..run.private_len) {
                    dst.copy_from_slice(run.private());
                }
                conn.private = Some(stored);
            }
            let rel_ns = i128::from(rec.ts_ns) - i128::from(first_ts);
            let event = |kind| Event {
                frame: rec.number,
                ts_ns: rec.ts_ns,
                rel_ns,
                helper: rule.name,
                master: conn.ct.orig,
                retransmission,
                kind,
            };
            for e in &run.plan.expectations {
                out.push(event(EventKind::Expect(e.exp)));
            }
            for r in &run.plan.refusals {
                out.push(event(EventKind::Refused(*r)));
            }
            counts = (run.plan.expectations.len(), run.plan.refusals.len());
            parse_error = run.plan.parse_error;
        }
        // Confirmed once its first packet has left the hook.
        conn.ct.status |= status::CONFIRMED;
        if let Some(rule) = rule
            && let Some(h) = self.helper_summary(rule.name)
        {
            h.packets += 1;
            h.expectations += counts.0;
            h.refused += counts.1;
            if parse_error {
                h.parse_errors.push(rec.number);
            }
        }
    }
}

/// A whole capture's replay.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    pub events: Vec<Event>,
    pub summary: Summary,
}

/// Replay a capture held in memory with the given helper rules.
pub fn replay(bytes: &[u8], rules: &[Rule]) -> Result<Replay, capture::Error> {
    let mut r = Replayer::new(rules);
    let mut events = Vec::new();
    for rec in capture::Capture::new(bytes)? {
        r.record(&rec?, &mut events);
    }
    r.finish();
    Ok(Replay {
        events,
        summary: r.summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IPPROTO_UDP;
    use crate::replay::capture::{LINKTYPE_RAW, Record};

    fn rules() -> Vec<Rule> {
        rules_from_config(&Config::default())
    }

    /// IPv4 TCP segment from a:ap to b:bp.
    fn tcp4(a: [u8; 4], ap: u16, b: [u8; 4], bp: u16, seq: u32, flags: u8, p: &[u8]) -> Vec<u8> {
        crate::wire::ipv4::tests::build(
            a,
            b,
            IPPROTO_TCP,
            &crate::wire::tcp::tests::build(ap, bp, seq, flags, p),
        )
    }

    const C: [u8; 4] = [192, 0, 2, 2];
    const S: [u8; 4] = [198, 51, 100, 2];

    fn feed(r: &mut Replayer<'_>, n: usize, pkt: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        r.record(
            &Record {
                number: n,
                offset: 0,
                linktype: LINKTYPE_RAW,
                ts_ns: 1_000_000_000 + n as u64 * 1000,
                data: pkt,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn passive_ftp_session_through_the_daemon_code() {
        let rules = rules();
        let mut r = Replayer::new(&rules);
        let syn = 0x02;
        let synack = 0x12;
        let psh = 0x18;
        assert!(feed(&mut r, 1, &tcp4(C, 40000, S, 21, 99, syn, b"")).is_empty());
        assert!(feed(&mut r, 2, &tcp4(S, 21, C, 40000, 499, synack, b"")).is_empty());
        assert!(feed(&mut r, 3, &tcp4(S, 21, C, 40000, 500, psh, b"220 hi\r\n")).is_empty());
        assert!(feed(&mut r, 4, &tcp4(C, 40000, S, 21, 100, psh, b"PASV\r\n")).is_empty());
        let pasv = b"227 Entering Passive Mode (198,51,100,2,156,64)\r\n";
        let ev = feed(&mut r, 5, &tcp4(S, 21, C, 40000, 508, psh, pasv));
        assert_eq!(ev.len(), 1);
        let e = ev[0];
        assert_eq!(
            (e.frame, e.helper, e.retransmission, e.rel_ns),
            (5, "ftp", false, 4000)
        );
        assert_eq!(e.master.src, IpAddr::from(C));
        let EventKind::Expect(x) = e.kind else {
            panic!("{e:?}")
        };
        assert_eq!((x.src, x.dst, x.dst_port), (C.into(), S.into(), 40000));
        // The same segment again: the kernel re-parses it; flagged as a retransmission.
        let ev = feed(&mut r, 6, &tcp4(S, 21, C, 40000, 508, psh, pasv));
        assert_eq!(ev.len(), 1);
        assert!(ev[0].retransmission);
        let s = r.summary();
        assert_eq!((s.frames, s.packets, s.connections), (6, 6, 1));
        assert_eq!(s.helpers[0].name, "ftp");
        assert_eq!((s.helpers[0].packets, s.helpers[0].expectations), (6, 2));
    }

    #[test]
    fn mid_stream_capture_takes_the_direction_from_the_well_known_port() {
        let rules = rules();
        let mut r = Replayer::new(&rules);
        // First packet seen is the server's; no handshake.
        feed(&mut r, 1, &tcp4(S, 21, C, 40000, 500, 0x18, b"200 ok\r\n"));
        feed(&mut r, 2, &tcp4(C, 40000, S, 21, 100, 0x18, b"NOOP\r\n"));
        let ev = feed(
            &mut r,
            3,
            &tcp4(C, 40000, S, 21, 106, 0x18, b"PORT 192,0,2,2,4,1\r\n"),
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].master.dst_port, 21);
        // A helper on another port only with a rule for it.
        let mut r = Replayer::new(&rules);
        let ev: Vec<_> = [
            tcp4(C, 40000, S, 2121, 99, 0x02, b""),
            tcp4(S, 2121, C, 40000, 499, 0x12, b""),
            tcp4(C, 40000, S, 2121, 100, 0x18, b"USER a\r\n"),
            tcp4(C, 40000, S, 2121, 108, 0x18, b"PORT 192,0,2,2,4,1\r\n"),
        ]
        .iter()
        .enumerate()
        .flat_map(|(i, p)| feed(&mut r, i + 1, p))
        .collect();
        assert!(ev.is_empty());
        let mut with = rules.clone();
        with.extend(parse_rule("ftp:2121", &Config::default()).unwrap());
        let mut r = Replayer::new(&with);
        let ev: Vec<_> = [
            tcp4(C, 40000, S, 2121, 99, 0x02, b""),
            tcp4(S, 2121, C, 40000, 499, 0x12, b""),
            tcp4(C, 40000, S, 2121, 100, 0x18, b"USER a\r\n"),
            tcp4(C, 40000, S, 2121, 108, 0x18, b"PORT 192,0,2,2,4,1\r\n"),
        ]
        .iter()
        .enumerate()
        .flat_map(|(i, p)| feed(&mut r, i + 1, p))
        .collect();
        assert_eq!(ev.len(), 1);
    }

    /// Each conntrack has its own id, as the kernel's: SIP keys its reassembly buffers
    /// by it, so two TCP connections with messages split across segments at the same
    /// time must not share a buffer.
    #[test]
    fn interleaved_split_sip_messages_of_two_connections() {
        let mut rules = rules();
        rules.extend(parse_rule("sip:5060", &Config::default()).unwrap());
        let mut r = Replayer::new(&rules);
        let invite = |port: u16| {
            let sdp = format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            );
            format!(
                "INVITE sip:b@198.51.100.2 SIP/2.0\r\nCall-ID: {port}\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
            .into_bytes()
        };
        let (a, b) = (invite(40000), invite(42000));
        let (a1, a2) = a.split_at(60);
        let (b1, b2) = b.split_at(70);
        let seg = |sport: u16, seq: u32, p: &[u8]| tcp4(C, sport, S, 5060, seq, 0x18, p);
        let mut ports = Vec::new();
        for (n, pkt) in [
            seg(41000, 100, a1),
            seg(41001, 500, b1),
            seg(41000, 100 + a1.len() as u32, a2),
            seg(41001, 500 + b1.len() as u32, b2),
        ]
        .iter()
        .enumerate()
        {
            for e in feed(&mut r, n + 1, pkt) {
                if let EventKind::Expect(x) = e.kind {
                    ports.push((e.frame, x.dst_port));
                }
            }
        }
        assert_eq!(ports, [(3, 40000), (3, 40001), (4, 42000), (4, 42001)]);
    }

    #[test]
    fn rule_specs() {
        let cfg = Config::default();
        let r = parse_rule("tftp:6969", &cfg).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].name, r[0].proto, r[0].port),
            ("tftp", IPPROTO_UDP, 6969)
        );
        for bad in ["ftp", "ftp:0", "ftp:70000", "irc:6667", ":21", "ftp:x"] {
            assert!(parse_rule(bad, &cfg).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_helper_on_two_protocols_gets_a_rule_on_each() {
        use crate::helpers::registry::test_entry::{NAME, PORT};
        let spec = |r: &Rule| (r.name, r.proto, r.port);
        let cfg = Config::parse(&format!("config helper\n\toption name '{NAME}'\n"), "t").unwrap();
        let rules = rules_from_config(&cfg);
        assert_eq!(
            rules.iter().map(spec).collect::<Vec<_>>(),
            [(NAME, IPPROTO_TCP, PORT), (NAME, IPPROTO_UDP, PORT)]
        );
        let r = parse_rule(&format!("{NAME}:5070"), &cfg).unwrap();
        assert_eq!(
            r.iter().map(spec).collect::<Vec<_>>(),
            [(NAME, IPPROTO_TCP, 5070), (NAME, IPPROTO_UDP, 5070)]
        );
        // `option proto` restricts it
        let udp = Config::parse(
            &format!("config helper\n\toption name '{NAME}'\n\toption proto 'udp'\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            rules_from_config(&udp).iter().map(spec).collect::<Vec<_>>(),
            [(NAME, IPPROTO_UDP, PORT)]
        );
    }

    #[test]
    fn junk_records_are_counted_not_fatal() {
        let rules = rules();
        let mut r = Replayer::new(&rules);
        let mut cut = tcp4(C, 40000, S, 21, 1, 0x18, b"PORT 1,2,3,4,5,6\r\n");
        cut.truncate(30);
        assert!(feed(&mut r, 1, &cut).is_empty());
        assert!(feed(&mut r, 2, &[]).is_empty());
        assert!(feed(&mut r, 3, &[0x60; 3]).is_empty());
        assert_eq!(r.summary().malformed, vec![1, 2, 3]);
        assert_eq!(r.summary().packets, 0);
    }
}
