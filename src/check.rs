//! `cthelperd check`: can this kernel and this process run the daemon? Each probe
//! talks to the kernel the way the daemon will, and a failure names the kernel
//! option and the OpenWrt package that provide what is missing.

use nix::errno::Errno;

use crate::netlink::attr::Writer;
use crate::netlink::msg::{NFNETLINK_V0, NLM_F_DUMP, NLM_F_REQUEST, NfGenMsg};
use crate::netlink::socket::{IoError, Socket};
use crate::netlink::{cthelper, ctnetlink, nfnl_type, queue, subsys};

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

/// Run every probe. The daemon can run iff all findings are ok.
pub fn run() -> Vec<Finding> {
    let config = kernel_config();
    let config = config.as_deref();
    let mut out = Vec::new();

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
