//! Firewall wiring: `table inet cthelperd`, one nft `ct helper` object per enabled
//! helper and protocol, and prerouting/output chains assigning them to their ports. The daemon
//! loads it with `nft -f -` after its helpers are registered (nft refuses an
//! unknown helper name), on every start and reload, and deletes it on stop; a start that
//! finds the table a crashed predecessor loaded for the same configuration keeps it
//! (its comment, [`comment`], names the script). It is a
//! table of its own, so fw4 flushing and reloading `table inet fw4` leaves it alone.
//! Runs at startup, reload and stop only, never on the packet path; at startup the
//! daemon serves its queues while nft runs ([`spawn`], [`Pending`]).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::config::{Config, Families, proto_name};
use crate::helpers::registry::Builtin;

pub const TABLE: &str = "inet cthelperd";
/// [`TABLE`] as nf_tables names it: family and name.
pub const TABLE_FAMILY: u8 = crate::netlink::nftables::NFPROTO_INET;
pub const TABLE_NAME: &str = "cthelperd";

/// The nft program run for the wiring (a path, or a name looked up in PATH).
pub const NFT: &str = "nft";

/// The nft `ct helper` object of helper `b` on protocol `proto` (an object has one
/// protocol): named like the helper when it runs on one protocol, so that `ct helper set
/// "ftp"` rules written for it keep working, `<name>-<protocol>` (`sip-udp`) when it runs
/// on several. Names follow the registry entry, not the configuration, so restricting a
/// helper to one of its protocols renames nothing.
pub fn object_name(b: &Builtin, proto: u8) -> String {
    if b.protos.len() > 1 {
        format!("{}-{}", b.name, proto_name(proto))
    } else {
        b.name.into()
    }
}

/// What the table's comment starts with; the rest is the fingerprint of the script.
const COMMENT_PREFIX: &str = "cthelperd ruleset ";

/// The script that replaces the table atomically (one nft transaction): declaring
/// the table first makes the delete succeed whether or not it existed. With no
/// helper to assign (or `firewall '0'`) it only removes the table.
///
/// The table carries a comment with a fingerprint of the rest of the script
/// ([`comment`]): a daemon restarted after a crash finds it in the kernel and keeps
/// the table instead of running nft again (lifecycle.rs).
pub fn ruleset(cfg: &Config) -> String {
    let mut s = ruleset_body(cfg);
    let open = format!("table {TABLE} {{\n");
    if let Some(at) = s.find(&open) {
        let line = format!("\tcomment \"{COMMENT_PREFIX}{:016x}\"\n", fingerprint(&s));
        s.insert_str(at + open.len(), &line);
    }
    s
}

/// The comment `ruleset` gave its table (None when it only removes the table).
pub fn comment(script: &str) -> Option<&str> {
    let start = script.find(&format!("\tcomment \"{COMMENT_PREFIX}"))? + "\tcomment \"".len();
    let len = script.get(start..)?.find('"')?;
    script.get(start..start + len)
}

/// FNV-1a, 64 bits: a change of the script changes the comment (not a defence
/// against anyone: whoever can write the table can write its comment too).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn ruleset_body(cfg: &Config) -> String {
    use core::fmt::Write;
    let mut s = format!("table {TABLE}\ndelete table {TABLE}\n");
    // With their queue numbers (the index in the configuration counts disabled ones).
    let numbered: Vec<_> = if cfg.enabled && cfg.firewall {
        (cfg.helpers.iter().enumerate())
            .filter(|(_, h)| h.enabled)
            .map(|(i, h)| (h, cfg.queue_of(i)))
            .collect()
    } else {
        Vec::new()
    };
    let helpers: Vec<_> = numbered.iter().map(|&(h, _)| h).collect();
    if helpers.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table {TABLE} {{");
    for h in &helpers {
        let l3 = match h.families {
            Families::Any => "inet",
            Families::Ipv4 => "ip",
            Families::Ipv6 => "ip6",
        };
        for proto in h.protos.iter() {
            let _ = writeln!(s, "\tct helper {} {{", object_name(h.builtin, proto));
            let _ = writeln!(
                s,
                "\t\ttype \"{}\" protocol {};",
                h.name(),
                proto_name(proto)
            );
            let _ = writeln!(s, "\t\tl3proto {l3};");
            let _ = writeln!(s, "\t}}");
        }
    }
    // prerouting: forwarded and incoming connections; output: the router's own.
    // Priority mangle (-150): after conntrack (-200) has a conntrack to attach the helper
    // to, and before DNAT (-100). Kernels without the 2025 fix "nft_ct: add seqadj
    // extension for natted connections" give a port-forwarded connection no
    // sequence-adjustment area unless it has its helper when its NAT binding is made,
    // and a length-changing rewrite would then break the session.
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        let _ = writeln!(s, "\tchain {chain} {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook {hook} priority mangle; policy accept;"
        );
        for h in &helpers {
            let Some(ports) = port_match(&h.ports) else {
                continue;
            };
            let family = family_match(h.families);
            for proto in h.protos.iter() {
                let _ = writeln!(
                    s,
                    "\t\t{family}{} dport {ports} ct helper set \"{}\"",
                    proto_name(proto),
                    object_name(h.builtin, proto)
                );
            }
        }
        // Expected connections whose first packet is the helper's own protocol, on
        // any port (see Builtin::expected_rule).
        for h in &helpers {
            let Some((proto, first_packet)) = h.builtin.expected_rule else {
                continue;
            };
            if !h.protos.iter().any(|p| p == proto) {
                continue;
            }
            let family = family_match(h.families);
            let _ = writeln!(
                s,
                "\t\t{family}ct status expected meta l4proto {} {first_packet} ct helper set \"{}\"",
                proto_name(proto),
                object_name(h.builtin, proto)
            );
        }
        let _ = writeln!(s, "\t}}");
    }
    queue_chains(&mut s, &numbered);
    let _ = writeln!(s, "}}");
    s
}

/// The chains that queue a helped connection's packets that carry payload; the
/// helpers are registered disabled (reload::QueuedBy::Ruleset), so the kernel's helper
/// hook, which would queue every packet (SYNs, FINs and pure ACKs too), lets them
/// through. A helper reads payload only, and a packet with none tells it nothing.
///
/// - postrouting and input are where that hook runs, and the priority is just before it
///   ([`QUEUE_PRIORITY`]): after source NAT, so the helper sees the packet with its final
///   addresses, as from the hook, and before conntrack confirms the connection.
/// - Which connections: those the prerouting and output chains gave the helper. nft's
///   `ct helper` names the helper of a connection's *master*, so a connection's own
///   helper is found as the rules that assigned it: `ct original proto-dst` (the port
///   before DNAT, as the assigning rule saw it) with IPS_HELPER set (an explicitly
///   assigned helper) and IPS_EXPECTED clear. Expected connections (FTP data, RTP)
///   are not queued, even on kernels that let them inherit their master's helper
///   (DESIGN.md 7).
/// - For a helper with an expected rule (SIP: the incoming call to a registered
///   phone), expected connections whose master has this helper and whose payload
///   starts with a capital letter, as every SIP message does (a method or
///   "SIP/2.0"), while RTP and RTCP start with 0x80-0xbf (version 2). Not IPS_HELPER:
///   where the connection inherited the helper from its expectation (DESIGN.md 7) the
///   expected rule's `ct helper set` finds a helper in place and sets nothing.
/// - `@ih,0,8 >= 0` is true for any first payload byte and fails to load when there is
///   none (nft_payload's inner-header base, Linux 5.16). An ICMP error about a helped
///   connection has no TCP or UDP payload either, which the hook skipped too.
/// - `bypass`: while no daemon has bound the queue the packet passes unparsed, and its
///   connection is still confirmed (the hook's bypass skips the confirmation).
fn queue_chains(s: &mut String, helpers: &[(&crate::config::HelperConfig, u16)]) {
    use core::fmt::Write;
    for hook in ["postrouting", "input"] {
        let _ = writeln!(s, "\tchain queue_{hook} {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook {hook} priority {QUEUE_PRIORITY}; policy accept;"
        );
        // Most packets through a router are of no helped or expected connection: one
        // test each. (Not IPS_HELPER alone: an expected SIP connection that inherited
        // its helper has none, see below.)
        let _ = writeln!(s, "\t\tct status & {ASSIGNED_BITS:#x} == 0 accept");
        for &(h, queue) in helpers {
            let family = family_match(h.families);
            let to_queue = format!("queue num {queue} bypass");
            if let Some(ports) = port_match(&h.ports) {
                for proto in h.protos.iter() {
                    let _ = writeln!(
                        s,
                        "\t\t{family}meta l4proto {} ct original proto-dst {ports} ct status & {ASSIGNED_BITS:#x} == {IPS_HELPER:#x} @ih,0,8 >= 0 {to_queue}",
                        proto_name(proto)
                    );
                }
            }
            if let Some((proto, _)) = h.builtin.expected_rule
                && h.protos.iter().any(|p| p == proto)
            {
                let _ = writeln!(
                    s,
                    "\t\t{family}meta l4proto {} ct status & {IPS_EXPECTED:#x} == {IPS_EXPECTED:#x} ct helper \"{}\" @ih,0,8 0x41-0x5a {to_queue}",
                    proto_name(proto),
                    h.name()
                );
            }
        }
        let _ = writeln!(s, "\t}}");
    }
}

/// Conntrack status bits (include/uapi/linux/netfilter/nf_conntrack_common.h):
/// IPS_EXPECTED, and IPS_HELPER, which nft's `ct helper set` sets.
const IPS_EXPECTED: u32 = 1 << 0;
const IPS_HELPER: u32 = 1 << 13;
const ASSIGNED_BITS: u32 = IPS_EXPECTED | IPS_HELPER;

/// The port, or set of ports, of a rule (None for none).
fn port_match(ports: &[u16]) -> Option<String> {
    match ports {
        [] => None,
        [one] => Some(one.to_string()),
        many => {
            let list: Vec<String> = many.iter().map(|p| p.to_string()).collect();
            Some(format!("{{ {} }}", list.join(", ")))
        }
    }
}

/// The match restricting a rule to the helper's families (nothing for both).
fn family_match(families: Families) -> &'static str {
    match families {
        Families::Any => "",
        Families::Ipv4 => "meta nfproto ipv4 ",
        Families::Ipv6 => "meta nfproto ipv6 ",
    }
}

/// Priority of the queueing chains (see [`queue_chains`]): just before conntrack's
/// confirmation (NF_IP_PRI_CONNTRACK_CONFIRM, INT_MAX), where the helper hook queues,
/// so that the verdict that skips the rest of the hook (queue::PASS) skips only that.
const QUEUE_PRIORITY: i32 = i32::MAX - 1;

/// Feed `script` to `nft -f -` and wait for it. The error names nft and carries its
/// message.
pub fn apply(nft: &str, script: &str) -> Result<(), String> {
    spawn(nft, script)?.finish()
}

/// An `nft -f -` run in progress.
pub struct Pending {
    child: std::process::Child,
    nft: String,
}

impl Pending {
    /// Becomes readable (end of file, or nft's error text) when nft is done: its
    /// stderr pipe, for the daemon's poll loop.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.child.stderr.as_ref().map(|e| e.as_fd())
    }

    /// Wait for nft (it has exited, or is about to, once [`Pending::fd`] is readable)
    /// and say whether it loaded the script.
    pub fn finish(self) -> Result<(), String> {
        let nft = self.nft;
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| format!("{nft} failed: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg: Vec<&str> = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(format!(
            "{nft} -f refused the table ({}): {}; the table needs nft_ct and nft_queue \
             (OpenWrt: kmod-nft-core, kmod-nft-queue) and Linux 5.16 or later, or set \
             option firewall '0' and assign the helpers in your own rules",
            out.status,
            msg.join(" | ")
        ))
    }
}

/// Start `nft -f -` on `script` without waiting for it (the script goes into the pipe
/// at once: it is far smaller than a pipe's buffer).
pub fn spawn(nft: &str, script: &str) -> Result<Pending, String> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "cannot run {nft}: not found (install nftables, or set option firewall '0')"
            ),
            _ => format!("cannot run {nft}: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as nft's failure in `finish`.
        let _ = stdin.write_all(script.as_bytes());
    }
    Ok(Pending {
        child,
        nft: nft.into(),
    })
}

/// Remove the table (whether or not it exists).
pub fn remove(nft: &str) -> Result<(), String> {
    apply(nft, &format!("table {TABLE}\ndelete table {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HelperConfig;

    /// `ruleset` without its comment line, after checking that it has exactly one, of
    /// the expected form, right after the table's opening line.
    fn uncommented(script: &str) -> String {
        let lines: Vec<&str> = script.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == "table inet cthelperd {")
            .expect("the table");
        let c = lines[at + 1];
        let hex = c
            .strip_prefix("\tcomment \"cthelperd ruleset ")
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no comment after the table's line: {c:?}"));
        assert!(hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(script.matches("comment").count(), 1);
        let mut out: String = lines
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != at + 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        if !script.ends_with('\n') {
            out.pop();
        }
        out
    }

    #[test]
    fn the_table_is_named_the_same_for_nft_and_for_nf_tables() {
        assert_eq!(TABLE, format!("inet {TABLE_NAME}"));
        assert_eq!(TABLE_FAMILY, 1); // NFPROTO_INET
    }

    #[test]
    fn the_comment_fingerprints_the_script() {
        let d = ruleset(&Config::default());
        assert_eq!(
            d,
            ruleset(&Config::default()),
            "the same for the same config"
        );
        let want = comment(&d).unwrap();
        assert!(want.starts_with("cthelperd ruleset "));
        assert!(d.contains(&format!("table inet cthelperd {{\n\tcomment \"{want}\"\n")));
        // Any change of what the table holds changes the comment.
        let mut c = Config::default();
        c.helpers[0].ports = heapless::Vec::from_slice(&[2121]).unwrap();
        assert_ne!(comment(&ruleset(&c)), Some(want));
        let mut c = Config::default();
        c.helpers[1].enabled = false;
        assert_ne!(comment(&ruleset(&c)), Some(want));
        // A script that only removes the table has none.
        let c = Config {
            firewall: false,
            ..Config::default()
        };
        assert_eq!(comment(&ruleset(&c)), None);
    }

    #[test]
    fn default_configuration_gives_this_table() {
        assert_eq!(
            uncommented(&ruleset(&Config::default())),
            "table inet cthelperd
delete table inet cthelperd
table inet cthelperd {
\tct helper ftp {
\t\ttype \"ftp\" protocol tcp;
\t\tl3proto inet;
\t}
\tct helper tftp {
\t\ttype \"tftp\" protocol udp;
\t\tl3proto inet;
\t}
\tct helper sip-tcp {
\t\ttype \"sip\" protocol tcp;
\t\tl3proto inet;
\t}
\tct helper sip-udp {
\t\ttype \"sip\" protocol udp;
\t\tl3proto inet;
\t}
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\ttcp dport 21 ct helper set \"ftp\"
\t\tudp dport 69 ct helper set \"tftp\"
\t\ttcp dport 5060 ct helper set \"sip-tcp\"
\t\tudp dport 5060 ct helper set \"sip-udp\"
\t\tct status expected meta l4proto udp @th,64,48 0x494e56495445 ct helper set \"sip-udp\"
\t}
\tchain output {
\t\ttype filter hook output priority mangle; policy accept;
\t\ttcp dport 21 ct helper set \"ftp\"
\t\tudp dport 69 ct helper set \"tftp\"
\t\ttcp dport 5060 ct helper set \"sip-tcp\"
\t\tudp dport 5060 ct helper set \"sip-udp\"
\t\tct status expected meta l4proto udp @th,64,48 0x494e56495445 ct helper set \"sip-udp\"
\t}
\tchain queue_postrouting {
\t\ttype filter hook postrouting priority 2147483646; policy accept;
\t\tct status & 0x2001 == 0 accept
\t\tmeta l4proto tcp ct original proto-dst 21 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48000 bypass
\t\tmeta l4proto udp ct original proto-dst 69 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48001 bypass
\t\tmeta l4proto tcp ct original proto-dst 5060 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t\tmeta l4proto udp ct original proto-dst 5060 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t\tmeta l4proto udp ct status & 0x1 == 0x1 ct helper \"sip\" @ih,0,8 0x41-0x5a queue num 48002 bypass
\t}
\tchain queue_input {
\t\ttype filter hook input priority 2147483646; policy accept;
\t\tct status & 0x2001 == 0 accept
\t\tmeta l4proto tcp ct original proto-dst 21 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48000 bypass
\t\tmeta l4proto udp ct original proto-dst 69 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48001 bypass
\t\tmeta l4proto tcp ct original proto-dst 5060 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t\tmeta l4proto udp ct original proto-dst 5060 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t\tmeta l4proto udp ct status & 0x1 == 0x1 ct helper \"sip\" @ih,0,8 0x41-0x5a queue num 48002 bypass
\t}
}
"
        );
    }

    #[test]
    fn families_port_sets_and_disabled_helpers() {
        let mut c = Config::default();
        let ftp: &mut HelperConfig = &mut c.helpers[0];
        ftp.families = Families::Ipv4;
        ftp.ports.push(2121).unwrap();
        c.helpers[1].families = Families::Ipv6;
        let text = ruleset(&c);
        assert!(text.contains("\t\tl3proto ip;\n"), "{text}");
        assert!(text.contains("\t\tl3proto ip6;\n"), "{text}");
        assert!(
            text.contains("\t\tmeta nfproto ipv4 tcp dport { 21, 2121 } ct helper set \"ftp\"\n"),
            "{text}"
        );
        assert!(
            text.contains("\t\tmeta nfproto ipv6 udp dport 69 ct helper set \"tftp\"\n"),
            "{text}"
        );
        assert!(
            text.contains("\t\tmeta nfproto ipv4 meta l4proto tcp ct original proto-dst { 21, 2121 } ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48000 bypass\n"),
            "{text}"
        );
        c.helpers[1].enabled = false;
        let text = ruleset(&c);
        assert!(!text.contains("tftp"));
        // A disabled helper keeps its queue number: the next one still takes base + 2.
        assert!(
            text.contains("ct helper \"sip\" @ih,0,8 0x41-0x5a queue num 48002 bypass"),
            "{text}"
        );
    }

    #[test]
    fn a_helper_on_two_protocols_gets_an_object_and_a_rule_per_protocol() {
        use crate::helpers::registry::test_entry::NAME;
        let mut ftp_tftp = Config::default();
        ftp_tftp.helpers.truncate(2);
        let text = format!(
            "{}\nconfig helper\n\toption name '{NAME}'\n\tlist port '5060'\n\tlist port '5061'\n",
            ftp_tftp.to_uci()
        );
        let c = Config::parse(&text, "t").unwrap();
        let rules = ruleset(&c);
        assert_eq!(
            uncommented(&rules),
            "table inet cthelperd
delete table inet cthelperd
table inet cthelperd {
\tct helper ftp {
\t\ttype \"ftp\" protocol tcp;
\t\tl3proto inet;
\t}
\tct helper tftp {
\t\ttype \"tftp\" protocol udp;
\t\tl3proto inet;
\t}
\tct helper sipmock-tcp {
\t\ttype \"sipmock\" protocol tcp;
\t\tl3proto inet;
\t}
\tct helper sipmock-udp {
\t\ttype \"sipmock\" protocol udp;
\t\tl3proto inet;
\t}
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\ttcp dport 21 ct helper set \"ftp\"
\t\tudp dport 69 ct helper set \"tftp\"
\t\ttcp dport { 5060, 5061 } ct helper set \"sipmock-tcp\"
\t\tudp dport { 5060, 5061 } ct helper set \"sipmock-udp\"
\t}
\tchain output {
\t\ttype filter hook output priority mangle; policy accept;
\t\ttcp dport 21 ct helper set \"ftp\"
\t\tudp dport 69 ct helper set \"tftp\"
\t\ttcp dport { 5060, 5061 } ct helper set \"sipmock-tcp\"
\t\tudp dport { 5060, 5061 } ct helper set \"sipmock-udp\"
\t}
\tchain queue_postrouting {
\t\ttype filter hook postrouting priority 2147483646; policy accept;
\t\tct status & 0x2001 == 0 accept
\t\tmeta l4proto tcp ct original proto-dst 21 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48000 bypass
\t\tmeta l4proto udp ct original proto-dst 69 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48001 bypass
\t\tmeta l4proto tcp ct original proto-dst { 5060, 5061 } ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t\tmeta l4proto udp ct original proto-dst { 5060, 5061 } ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t}
\tchain queue_input {
\t\ttype filter hook input priority 2147483646; policy accept;
\t\tct status & 0x2001 == 0 accept
\t\tmeta l4proto tcp ct original proto-dst 21 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48000 bypass
\t\tmeta l4proto udp ct original proto-dst 69 ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48001 bypass
\t\tmeta l4proto tcp ct original proto-dst { 5060, 5061 } ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t\tmeta l4proto udp ct original proto-dst { 5060, 5061 } ct status & 0x2001 == 0x2000 @ih,0,8 >= 0 queue num 48002 bypass
\t}
}
"
        );
        // Restricted to UDP, and to IPv6: the object keeps its name.
        let c = Config::parse(
            &format!("config helper\n\toption name '{NAME}'\n\toption proto 'udp'\n\toption family 'ipv6'\n"),
            "t",
        )
        .unwrap();
        let text = ruleset(&c);
        assert!(
            text.contains("\tct helper sipmock-udp {\n\t\ttype \"sipmock\" protocol udp;\n\t\tl3proto ip6;\n\t}\n"),
            "{text}"
        );
        assert!(!text.contains("sipmock-tcp"), "{text}");
        assert!(
            text.contains("\t\tmeta nfproto ipv6 udp dport 5060 ct helper set \"sipmock-udp\"\n"),
            "{text}"
        );
    }

    #[test]
    fn nothing_to_assign_only_removes_the_table() {
        let removal = "table inet cthelperd\ndelete table inet cthelperd\n";
        let c = Config {
            firewall: false,
            ..Config::default()
        };
        assert_eq!(ruleset(&c), removal);
        let c = Config {
            enabled: false,
            ..Config::default()
        };
        assert_eq!(ruleset(&c), removal);
        let mut c = Config::default();
        for h in c.helpers.iter_mut() {
            h.enabled = false;
        }
        assert_eq!(ruleset(&c), removal);
    }

    #[test]
    fn missing_nft_is_named() {
        let e = apply("/nonexistent/nft", "").unwrap_err();
        assert!(e.contains("cannot run /nonexistent/nft: not found"), "{e}");
    }

    /// A stand-in for nft: reads the script, waits, then succeeds or fails with a
    /// message, as the script's first line says.
    fn fake_nft(dir: &std::path::Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("nft");
        std::fs::write(
            &path,
            "#!/bin/sh
read first
sleep 0.3
[ \"$first\" = ok ] && exit 0
             echo \"Error: $first\" >&2
exit 1
",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().into()
    }

    /// The daemon's poll loop waits on `Pending::fd` while it serves: spawn returns at
    /// once, the fd turns readable when nft is done, and finish reports its outcome.
    #[test]
    fn a_spawned_nft_is_waited_for_through_its_fd() {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let dir = std::env::temp_dir().join(format!("cthelperd-nft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nft = fake_nft(&dir);
        for (script, ok) in [("ok\n", true), ("no such helper\n", false)] {
            let t0 = std::time::Instant::now();
            let pending = spawn(&nft, script).unwrap();
            assert!(
                t0.elapsed() < std::time::Duration::from_millis(250),
                "did not wait"
            );
            let mut fds = [PollFd::new(pending.fd().unwrap(), PollFlags::POLLIN)];
            assert_eq!(
                poll(&mut fds, PollTimeout::ZERO).unwrap(),
                0,
                "not done yet"
            );
            assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
            match pending.finish() {
                Ok(()) => assert!(ok),
                Err(e) => {
                    assert!(!ok);
                    assert!(
                        e.contains("refused the table") && e.contains("Error: no such helper"),
                        "{e}"
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
