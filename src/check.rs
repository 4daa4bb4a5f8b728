//! `cthelperd check`: can this kernel and this process run the daemon? Each probe
//! talks to the kernel the way the daemon will, and a failure names the kernel
//! option and the OpenWrt package that provide what is missing.

use nix::errno::Errno;

use crate::netlink::attr::Writer;
use crate::netlink::msg::{NFNETLINK_V0, NLM_F_DUMP, NLM_F_REQUEST, NfGenMsg};
use crate::netlink::socket::Link;
use crate::netlink::socket::{IoError, Socket};
use crate::netlink::{cthelper, ctnetlink, nfnl_type, queue, subsys};

pub mod quirks;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: &'static str,
    pub ok: bool,
    pub detail: String,
}

const CAP_NET_ADMIN: u32 = 12;

/// Effective capabilities from /proc/self/status (None if unreadable).
fn has_net_admin() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    let caps = u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The running kernel's configuration, if it can be read.
fn kernel_config() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim();
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    let out = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// "=y", "=m" or "is not set" for one option, from the kernel configuration.
fn config_state(config: Option<&str>, option: &str) -> Option<String> {
    let config = config?;
    for line in config.lines() {
        if let Some(rest) = line.strip_prefix(option)
            && let Some(v) = rest.strip_prefix('=')
        {
            return Some(format!("{option}={v}"));
        }
    }
    Some(format!("{option} is not set"))
}

fn request(
    sock: &mut Socket,
    build: impl FnOnce(&mut Writer<'_>, u32) -> crate::netlink::Result<()>,
) -> Result<usize, IoError> {
    let mut req = [0u8; 256];
    let mut rx = vec![0u8; 32 * 1024];
    let seq = sock.next_seq();
    let mut w = Writer::new(&mut req);
    build(&mut w, seq)?;
    let len = w.len();
    let mut answers = 0;
    sock.transact(&req[..len], seq, &mut rx, |_| answers += 1)?;
    Ok(answers)
}

fn missing(option: &str, kmod: &str, config: Option<&str>, err: &IoError) -> String {
    let state =
        config_state(config, option).unwrap_or_else(|| format!("{option} (config unreadable)"));
    if state.ends_with("=y") || state.ends_with("=m") {
        // The option is there, so something between us and the kernel refuses:
        // typically an emulator (qemu-user has no netfilter netlink) or a sandbox.
        return format!(
            "{err}; this kernel has {option} ({state}), so the refusal comes from between this \
             process and the kernel (an emulator such as qemu-user, a sandbox, or the module not loaded)"
        );
    }
    format!("{err}; needs {option} (OpenWrt: {kmod}); this kernel: {state}")
}

/// A kernel helper that owns a name cthelperd registers under: while its module is
/// loaded (or built in), nfnetlink_cthelper refuses our registration of that name with
/// EEXIST. OpenWrt's packages load them at boot (AutoProbe).
pub struct KernelHelper {
    /// The helper name cthelperd registers.
    pub name: &'static str,
    /// The kernel module that registers the same name.
    pub module: &'static str,
    /// Its NAT companion, which depends on it and must be unloaded first.
    pub nat_module: &'static str,
    /// The OpenWrt package that installs and autoloads it.
    pub package: &'static str,
}

pub const KERNEL_HELPERS: [KernelHelper; 3] = [
    KernelHelper {
        name: "ftp",
        module: "nf_conntrack_ftp",
        nat_module: "nf_nat_ftp",
        package: "kmod-nf-nathelper",
    },
    KernelHelper {
        name: "tftp",
        module: "nf_conntrack_tftp",
        nat_module: "nf_nat_tftp",
        package: "kmod-nf-nathelper-extra (24.10; kmod-nf-nathelper-tftp from 25.x)",
    },
    KernelHelper {
        name: "sip",
        module: "nf_conntrack_sip",
        nat_module: "nf_nat_sip",
        package: "kmod-nf-nathelper-extra (24.10; kmod-nf-nathelper-sip from 25.x)",
    },
];

/// How a kernel helper module is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// In /proc/modules: can be unloaded.
    Module,
    /// In /sys/module but not in /proc/modules: compiled into the kernel.
    BuiltIn,
}

/// Whether `module` is loaded: /proc/modules lists it (`proc_modules`, its text), or
/// /sys/module/<module> exists (`sys_module`, normally "/sys/module"), which also
/// shows built-in modules that have parameters, as the conntrack helpers do.
pub fn module_presence(
    module: &str,
    sys_module: &std::path::Path,
    proc_modules: Option<&str>,
) -> Option<Presence> {
    let listed = proc_modules.is_some_and(|text| {
        text.lines()
            .any(|l| l.split_ascii_whitespace().next() == Some(module))
    });
    if listed {
        Some(Presence::Module)
    } else if sys_module.join(module).is_dir() {
        Some(Presence::BuiltIn)
    } else {
        None
    }
}

/// The finding for the kernel's own helpers: FAIL, with what to do, for every one
/// that is present.
/// Only the helpers named in `configured` (the enabled helpers of the configuration)
/// can conflict: a kernel SIP helper does no harm to a cthelperd that runs no SIP.
pub fn kernel_helpers_finding(
    sys_module: &std::path::Path,
    proc_modules: Option<&str>,
    configured: &[&str],
) -> Finding {
    let mut problems = Vec::new();
    for h in KERNEL_HELPERS
        .iter()
        .filter(|h| configured.contains(&h.name))
    {
        match module_presence(h.module, sys_module, proc_modules) {
            None => {}
            Some(Presence::Module) => problems.push(format!(
                "{} is loaded and owns helper name \"{}\" (cthelperd's registration fails with \
                 EEXIST): rmmod {} {}, and remove the package that loads it at boot: opkg remove {}",
                h.module, h.name, h.nat_module, h.module, h.package
            )),
            Some(Presence::BuiltIn) => problems.push(format!(
                "{} is built into this kernel and owns helper name \"{}\" (cthelperd's \
                 registration fails with EEXIST): it cannot be unloaded; disable cthelperd's {} \
                 helper or use a kernel with it as a module",
                h.module, h.name, h.name
            )),
        }
    }
    Finding {
        what: "kernel helpers",
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            let names: Vec<&str> = KERNEL_HELPERS
                .iter()
                .filter(|h| configured.contains(&h.name))
                .map(|h| h.module)
                .collect();
            if names.is_empty() {
                "none of cthelperd's configured helpers has a kernel twin".into()
            } else {
                format!("{} not loaded", names.join(", "))
            }
        } else {
            problems.join("; ")
        },
    }
}

/// The first kernel whose nft payload expression reads a packet's payload after its
/// TCP/UDP header (`@ih`, the inner-header base), which the table's queue rules use.
const INNER_HEADER_SINCE: quirks::Version = quirks::Version {
    major: 5,
    minor: 16,
    patch: 0,
};

/// Whether nft_queue is loaded or installed for the running kernel (OpenWrt keeps its
/// modules flat in /lib/modules/<release>, Debian under kernel/net/netfilter).
fn nft_queue_module_present() -> bool {
    if std::path::Path::new("/sys/module/nft_queue").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let base = format!("/lib/modules/{}", release.trim());
    ["", "/kernel/net/netfilter"].iter().any(|dir| {
        [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|ext| std::path::Path::new(&format!("{base}{dir}/nft_queue{ext}")).exists())
    })
}

/// What the table's queue rules need (firewall.rs): nft_queue, and the payload match
/// of Linux 5.16. With `firewall '0'` there is no table and the helpers' hook queues.
pub fn table_queue_finding(
    firewall: bool,
    version: Option<quirks::Version>,
    config: Option<&str>,
    module_present: bool,
) -> Finding {
    let what = "table queue rules";
    if !firewall {
        return Finding {
            what,
            ok: true,
            detail: "not used (option firewall '0': the helpers' own hook queues)".into(),
        };
    }
    const FIX: &str = "or set option firewall '0' and assign the helpers in your own rules";
    if let Some(v) = version
        && v < INNER_HEADER_SINCE
    {
        return Finding {
            what,
            ok: false,
            detail: format!(
                "Linux {v} lacks nft's payload match after the TCP/UDP header (@ih, Linux \
                 {INNER_HEADER_SINCE}) that the table's queue rules use: upgrade, {FIX}"
            ),
        };
    }
    let state = config_state(config, "CONFIG_NFT_QUEUE");
    let (ok, detail) = match state.as_deref() {
        _ if module_present => (true, "nft_queue available".to_string()),
        Some(s) if s.ends_with("=y") || s.ends_with("=m") => (true, s.to_string()),
        Some(s) => (
            false,
            format!("needs CONFIG_NFT_QUEUE (OpenWrt: kmod-nft-queue), {FIX}; this kernel: {s}"),
        ),
        None => (
            false,
            format!("nft_queue not found; needs CONFIG_NFT_QUEUE (OpenWrt: kmod-nft-queue), {FIX}"),
        ),
    };
    Finding { what, ok, detail }
}

/// The kernel's upstream version and the known behaviours of it that matter here
/// (informational: never a failure).
pub fn kernel_version_finding(proc_version: Option<&str>) -> Finding {
    let detail = match proc_version.and_then(quirks::running_version) {
        None => "version unknown (cannot read /proc/version)".into(),
        Some(v) => {
            let known: Vec<&str> = quirks::quirks_of(v).map(|q| q.text).collect();
            if known.is_empty() {
                format!("{v}; no known quirk")
            } else {
                format!("{v}; {}", known.join("; "))
            }
        }
    };
    Finding {
        what: "kernel version",
        ok: true,
        detail,
    }
}

/// Run every probe. The daemon can run iff all findings are ok.
pub fn run() -> Vec<Finding> {
    let config = kernel_config();
    let config = config.as_deref();
    let mut out = Vec::new();
    out.push(kernel_version_finding(
        std::fs::read_to_string("/proc/version").ok().as_deref(),
    ));

    let cap = has_net_admin();
    out.push(Finding {
        what: "CAP_NET_ADMIN",
        ok: cap == Some(true),
        detail: match cap {
            Some(true) => "present".into(),
            Some(false) => "missing: run as root or grant CAP_NET_ADMIN".into(),
            None => "cannot read /proc/self/status".into(),
        },
    });

    let modules = std::fs::read_to_string("/proc/modules").ok();
    // The helpers the configuration enables (all built-in ones if it cannot be read:
    // the daemon would not start then anyway, and the check stays on the safe side).
    let loaded = crate::config::Config::load(None);
    let configured: Vec<&str> = match &loaded {
        Ok(c) => c
            .helpers
            .iter()
            .filter(|h| h.enabled)
            .map(|h| h.name())
            .collect(),
        Err(_) => crate::helpers::registry::BUILTINS
            .iter()
            .map(|b| b.name)
            .collect(),
    };
    out.push(kernel_helpers_finding(
        std::path::Path::new("/sys/module"),
        modules.as_deref(),
        &configured,
    ));
    out.push(table_queue_finding(
        loaded.as_ref().map_or(true, |c| c.firewall),
        std::fs::read_to_string("/proc/version")
            .ok()
            .as_deref()
            .and_then(quirks::running_version),
        config,
        nft_queue_module_present(),
    ));

    let mut sock = match Socket::open() {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding {
                what: "netfilter netlink",
                ok: false,
                detail: missing("CONFIG_NETFILTER_NETLINK", "kmod-nfnetlink", config, &e),
            });
            return out;
        }
    };
    out.push(Finding {
        what: "netfilter netlink",
        ok: true,
        detail: format!("socket open (port id {})", sock.portid()),
    });

    let helpers = request(&mut sock, cthelper::write_dump);
    out.push(Finding {
        what: "nfnetlink_cthelper",
        ok: helpers.is_ok(),
        detail: match &helpers {
            Ok(n) => format!("available ({n} user-space helpers registered)"),
            Err(e) if e.errno() == Some(Errno::EPERM) => format!("{e}: needs CAP_NET_ADMIN"),
            Err(e) => missing(
                "CONFIG_NF_CT_NETLINK_HELPER",
                "kmod-nfnetlink-cthelper",
                config,
                e,
            ),
        },
    });

    let exps = request(&mut sock, |w, seq| {
        let m = w.begin_nfnl(
            nfnl_type(subsys::CTNETLINK_EXP, ctnetlink::IPCTNL_MSG_EXP_GET),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NfGenMsg {
                family: 0,
                version: NFNETLINK_V0,
                res_id: 0,
            },
        )?;
        w.end_msg(m)
    });
    out.push(Finding {
        what: "ctnetlink",
        ok: exps.is_ok(),
        detail: match &exps {
            Ok(n) => format!("available ({n} expectations pending)"),
            Err(e) => missing(
                "CONFIG_NF_CT_NETLINK",
                "kmod-nf-conntrack-netlink",
                config,
                e,
            ),
        },
    });

    // Queue probe: bind a high queue number nobody is likely to use, ask for
    // conntrack data with each packet, and let it go again.
    let probe_queue = 65000 + (std::process::id() % 500) as u16;
    let bind = request(&mut sock, |w, seq| {
        queue::write_bind_only(w, seq, probe_queue)
    });
    out.push(Finding {
        what: "nfnetlink_queue",
        ok: bind.is_ok(),
        detail: match &bind {
            Ok(_) => format!("available (probe queue {probe_queue} bound)"),
            Err(e) => missing(
                "CONFIG_NETFILTER_NETLINK_QUEUE",
                "kmod-nfnetlink-queue",
                config,
                e,
            ),
        },
    });
    if bind.is_ok() {
        let mut glue = request(&mut sock, |w, seq| {
            queue::write_flags(
                w,
                seq,
                probe_queue,
                queue::NFQA_CFG_F_CONNTRACK,
                queue::NFQA_CFG_F_CONNTRACK,
            )
        });
        if glue.as_ref().err().and_then(|e| e.errno()) == Some(Errno::EAGAIN) {
            glue = request(&mut sock, |w, seq| {
                queue::write_flags(
                    w,
                    seq,
                    probe_queue,
                    queue::NFQA_CFG_F_CONNTRACK,
                    queue::NFQA_CFG_F_CONNTRACK,
                )
            });
        }
        out.push(Finding {
            what: "queue conntrack glue",
            ok: glue.is_ok(),
            detail: match &glue {
                Ok(_) => "available (packets come with their conntrack)".into(),
                Err(e) => missing(
                    "CONFIG_NETFILTER_NETLINK_GLUE_CT",
                    "kmod-nf-conntrack-netlink",
                    config,
                    e,
                ),
            },
        });
        let _ = request(&mut sock, |w, seq| queue::write_unbind(w, seq, probe_queue));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_needs_nft_queue_and_linux_5_16() {
        let v = |major, minor| {
            Some(quirks::Version {
                major,
                minor,
                patch: 3,
            })
        };
        let m = Some("CONFIG_NFT_QUEUE=m\n");
        let unset = Some("# CONFIG_NFT_QUEUE is not set\n");
        assert!(table_queue_finding(true, v(6, 1), m, false).ok);
        assert!(table_queue_finding(true, v(6, 6), None, true).ok);
        assert!(table_queue_finding(true, None, m, false).ok);
        let old = table_queue_finding(true, v(5, 15), m, true);
        assert!(!old.ok);
        assert!(old.detail.contains("Linux 5.15.3") && old.detail.contains("firewall '0'"));
        let missing = table_queue_finding(true, v(6, 12), unset, false);
        assert!(!missing.ok);
        assert!(
            missing.detail.contains("kmod-nft-queue"),
            "{}",
            missing.detail
        );
        assert!(!table_queue_finding(true, v(6, 12), None, false).ok);
        // No table, no queue rules: nothing needed.
        assert!(table_queue_finding(false, v(5, 10), unset, false).ok);
    }

    fn sys_module_with(modules: &[&str]) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cthelperd-sysmodule-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for m in modules {
            std::fs::create_dir_all(dir.join(m).join("parameters")).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const PROC_MODULES: &str = "nf_nat_ftp 16384 0 - Live 0x0000000000000000\n\
        nf_conntrack_ftp 20480 1 nf_nat_ftp, Live 0x0000000000000000\n\
        nfnetlink_cthelper 16384 0 - Live 0x0000000000000000\n";

    #[test]
    fn a_loaded_kernel_ftp_helper_fails_check_and_names_the_fix() {
        let sys = sys_module_with(&["nf_conntrack_ftp", "nf_nat_ftp"]);
        let f = kernel_helpers_finding(&sys, Some(PROC_MODULES), &["ftp", "tftp"]);
        assert!(!f.ok);
        assert_eq!(f.what, "kernel helpers");
        assert!(
            f.detail.contains("nf_conntrack_ftp is loaded"),
            "{}",
            f.detail
        );
        assert!(
            f.detail.contains("rmmod nf_nat_ftp nf_conntrack_ftp"),
            "{}",
            f.detail
        );
        assert!(
            f.detail.contains("opkg remove kmod-nf-nathelper"),
            "{}",
            f.detail
        );
        assert!(!f.detail.contains("tftp"), "{}", f.detail);
        let _ = std::fs::remove_dir_all(&sys);
    }

    #[test]
    fn a_built_in_kernel_helper_cannot_be_unloaded() {
        let sys = sys_module_with(&["nf_conntrack_tftp"]);
        let f = kernel_helpers_finding(&sys, Some("nfnetlink_queue 1 0 - Live 0x0\n"), &["tftp"]);
        assert!(!f.ok);
        assert!(
            f.detail
                .contains("nf_conntrack_tftp is built into this kernel"),
            "{}",
            f.detail
        );
        assert!(f.detail.contains("\"tftp\""), "{}", f.detail);
        assert_eq!(
            module_presence("nf_conntrack_tftp", &sys, None),
            Some(Presence::BuiltIn)
        );
        let _ = std::fs::remove_dir_all(&sys);
    }

    /// The kernel's SIP helper conflicts only with a configuration that runs ours.
    #[test]
    fn a_loaded_kernel_sip_helper_matters_only_when_sip_is_configured() {
        let sys = sys_module_with(&["nf_conntrack_sip", "nf_nat_sip"]);
        let proc = "nf_nat_sip 1 0 - Live 0x0\nnf_conntrack_sip 1 1 nf_nat_sip, Live 0x0\n";
        let f = kernel_helpers_finding(&sys, Some(proc), &["ftp", "tftp", "sip"]);
        assert!(!f.ok);
        assert!(
            f.detail.contains("rmmod nf_nat_sip nf_conntrack_sip"),
            "{}",
            f.detail
        );
        assert!(f.detail.contains("kmod-nf-nathelper-sip"), "{}", f.detail);
        let f = kernel_helpers_finding(&sys, Some(proc), &["ftp", "tftp"]);
        assert!(f.ok, "{}", f.detail);
        assert_eq!(f.detail, "nf_conntrack_ftp, nf_conntrack_tftp not loaded");
        let _ = std::fs::remove_dir_all(&sys);
    }

    #[test]
    fn no_kernel_helpers_is_ok() {
        let sys = sys_module_with(&["nfnetlink_cthelper"]);
        // a module whose name only starts with the helper's is not it
        let all = ["ftp", "tftp", "sip"];
        let f = kernel_helpers_finding(&sys, Some("nf_conntrack_ftp_x 1 0 - Live 0x0\n"), &all);
        assert!(f.ok, "{}", f.detail);
        assert_eq!(
            f.detail,
            "nf_conntrack_ftp, nf_conntrack_tftp, nf_conntrack_sip not loaded"
        );
        let _ = std::fs::remove_dir_all(&sys);
    }
}
