//! Daemon configuration: /etc/config/cthelperd in UCI syntax (see
//! init.d/cthelperd.config, which is also what `Config::default()` is), its
//! validation and its printing back as UCI text (`cthelperd check-config`).

mod classes;
pub mod uci;

use log::LevelFilter;

pub use crate::helpers::registry::Protos;
use crate::helpers::registry::{self, BUILTINS, Builtin};
use crate::model::{Family, IPPROTO_TCP, IPPROTO_UDP};
pub use classes::{ClassLimits, Limits, class_settings};
use classes::{ExpectField, parse_class_option};

/// Most helpers one daemon serves.
pub const MAX_HELPERS: usize = 4;
/// Most ports one helper is assigned to by the firewall wiring.
pub const MAX_PORTS: usize = 8;
/// Where the daemon looks when no --config is given.
pub const DEFAULT_PATH: &str = "/etc/config/cthelperd";

/// Which address families a helper is registered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    Ipv4,
    Ipv6,
    Any,
}

impl Families {
    pub fn iter(self) -> impl Iterator<Item = Family> {
        let (v4, v6) = match self {
            Families::Ipv4 => (true, false),
            Families::Ipv6 => (false, true),
            Families::Any => (true, true),
        };
        [(v4, Family::Ipv4), (v6, Family::Ipv6)]
            .into_iter()
            .filter_map(|(on, f)| on.then_some(f))
    }

    /// The UCI spelling (fw4's `family` values).
    pub fn as_str(self) -> &'static str {
        match self {
            Families::Ipv4 => "ipv4",
            Families::Ipv6 => "ipv6",
            Families::Any => "any",
        }
    }
}

/// "tcp" / "udp" for the protocols a helper may use.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        _ => "?",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperConfig {
    /// UCI section name (kept so that check-config prints the file back).
    pub section: Option<String>,
    /// The built-in helper (kernel name, protocols, classes, code).
    pub builtin: &'static Builtin,
    pub enabled: bool,
    pub families: Families,
    /// A non-empty subset of the helper's protocols; each is registered (per family).
    pub protos: Protos,
    /// Well-known ports (used by the firewall wiring, not by the kernel registration).
    pub ports: heapless::Vec<u16, MAX_PORTS>,
    /// Per expectation class: how many may be pending per master, for how long.
    pub classes: ClassLimits,
    /// Accept announced ports below 1024 (FTP, with or without NAT; see
    /// `helpers::Policy`). Off by default.
    pub allow_low_ports: bool,
    /// SIP's options (`sip_direct_media`, `sip_direct_signalling`, `sip_timeout`); only a
    /// `sip` section may set them.
    pub sip: crate::helpers::sip::Options,
}

impl HelperConfig {
    /// The kernel helper name.
    pub fn name(&self) -> &'static str {
        self.builtin.name
    }

    /// `option proto` as check-config prints it: `any` for all of a helper's several
    /// protocols, else the one protocol.
    pub fn proto_option(&self) -> &'static str {
        if self.protos == self.builtin.protos && self.protos.len() > 1 {
            "any"
        } else {
            self.protos.label()
        }
    }

    /// What the helper itself is told about this configuration.
    pub fn policy(&self) -> crate::helpers::Policy {
        crate::helpers::Policy {
            allow_low_ports: self.allow_low_ports,
            sip: self.sip,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `0`: the daemon exits at once (the package stays installed but inactive).
    pub enabled: bool,
    pub log_level: LevelFilter,
    pub syslog: bool,
    /// Queue of the first helper; each further helper takes the next number.
    pub queue_base: u16,
    pub queue_maxlen: u32,
    /// When a queue is full, accept packets unparsed instead of dropping them.
    pub fail_open: bool,
    /// Install `table inet cthelperd` assigning the helpers to their ports.
    pub firewall: bool,
    pub helpers: heapless::Vec<HelperConfig, MAX_HELPERS>,
}

/// The default queue of the first helper. Not 0: queue 0 is what iptables' NFQUEUE and
/// nft's `queue` statement use when no number is given, and what IPS/IDS setups and most
/// examples take, so a second NFQUEUE user on the router would collide with us (the
/// second bind fails with EPERM, or worse, its rules send packets to our queues). Small
/// numbers are what people type; 48000 is far from them and from the top of the range
/// (`cthelperd check` probes 65000..65499), and leaves room for the helpers after it.
pub const DEFAULT_QUEUE_BASE: u16 = 48000;
/// Packets a queue holds before the kernel drops (or, with fail_open, accepts) more.
const DEFAULT_QUEUE_MAXLEN: u32 = 1024;
/// Upper bounds that catch typos (an extra digit) without limiting real use.
const MAX_QUEUE_MAXLEN: u32 = 1 << 20;
pub const MAX_EXPECT_TIMEOUT: u32 = 86_400;
/// Most seconds `sip_timeout` may keep a SIP connection (five days, TCP's established
/// timeout): registrations rarely ask for more than a day.
pub const MAX_SIP_TIMEOUT: u32 = 432_000;
/// The kernel's NF_CT_EXPECT_MAX_CNT: most pending expectations a policy allows.
pub const MAX_EXPECT_MAX: u32 = 255;
/// The lowest port number (0 is no port).
const MIN_PORT: u16 = 1;

impl HelperConfig {
    /// A helper section with nothing but `option name`: the registry's defaults.
    fn builtin_default(b: &'static Builtin) -> HelperConfig {
        let mut ports = heapless::Vec::new();
        for &p in b.ports.iter().take(MAX_PORTS) {
            let _ = ports.push(p);
        }
        HelperConfig {
            section: Some(b.name.into()),
            builtin: b,
            enabled: true,
            families: Families::Any,
            protos: b.protos,
            ports,
            classes: ClassLimits::defaults(b),
            allow_low_ports: false,
            sip: Default::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut helpers = heapless::Vec::new();
        for b in BUILTINS.iter().filter(|b| b.default_on) {
            let _ = helpers.push(HelperConfig::builtin_default(b));
        }
        Config {
            enabled: true,
            log_level: LevelFilter::Info,
            syslog: false,
            queue_base: DEFAULT_QUEUE_BASE,
            queue_maxlen: DEFAULT_QUEUE_MAXLEN,
            fail_open: false,
            firewall: true,
            helpers,
        }
    }
}

/// A configuration error: `file:line: option: problem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 0 when the problem is not on one line (the file cannot be read).
    pub line: usize,
    pub option: Option<String>,
    pub problem: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(o) = &self.option {
            write!(f, ": {o}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "yes" | "on" | "true" | "enabled" => Some(true),
        "0" | "no" | "off" | "false" | "disabled" => Some(false),
        _ => None,
    }
}

fn parse_num<T: TryFrom<u64>>(v: &str, min: u64, max: u64) -> Result<T, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("{v:?} is not a number ({min}..{max})"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{n} is out of range ({min}..{max})"));
    }
    T::try_from(n).map_err(|_| format!("{n} is out of range ({min}..{max})"))
}

fn level_name(l: LevelFilter) -> &'static str {
    match l {
        LevelFilter::Off => "off",
        LevelFilter::Error => "error",
        LevelFilter::Warn => "warn",
        LevelFilter::Info => "info",
        LevelFilter::Debug => "debug",
        LevelFilter::Trace => "trace",
    }
}

/// Rejects a second `option` of the same name in one section (UCI would keep the
/// last one silently; two values usually mean a copy-paste mistake).
fn check_duplicates(s: &uci::Section) -> Result<(), (usize, String, String)> {
    for (i, o) in s.options.iter().enumerate() {
        if o.is_list {
            continue;
        }
        if let Some(first) = s.options[..i].iter().find(|p| p.name == o.name) {
            return Err((
                o.line,
                o.name.clone(),
                format!("given twice (first on line {})", first.line),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// The queue number of the helper at `index`.
    pub fn queue_of(&self, index: usize) -> u16 {
        self.queue_base.wrapping_add(index as u16)
    }

    /// Parse UCI text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |line: usize, option: Option<&str>, problem: String| ConfigError {
            file: file.into(),
            line,
            option: option.map(Into::into),
            problem,
        };
        let sections = uci::parse(text).map_err(|e| err(e.line, None, e.problem))?;
        let mut cfg = Config {
            helpers: heapless::Vec::new(),
            ..Config::default()
        };
        let mut globals_line = None;
        for s in &sections {
            check_duplicates(s).map_err(|(l, o, p)| err(l, Some(&o), p))?;
            match s.kind.as_str() {
                "globals" => {
                    if let Some(first) = globals_line {
                        return Err(err(
                            s.line,
                            None,
                            format!("second globals section (first on line {first})"),
                        ));
                    }
                    globals_line = Some(s.line);
                    for o in &s.options {
                        let bad = |p: String| err(o.line, Some(&o.name), p);
                        if o.is_list {
                            return Err(bad("is not a list (use option)".into()));
                        }
                        let v = o.value.as_str();
                        let boolean = || {
                            parse_bool(v)
                                .ok_or_else(|| bad(format!("{v:?} is not a boolean (0 or 1)")))
                        };
                        match o.name.as_str() {
                            "enabled" => cfg.enabled = boolean()?,
                            "syslog" => cfg.syslog = boolean()?,
                            "fail_open" => cfg.fail_open = boolean()?,
                            "firewall" => cfg.firewall = boolean()?,
                            "log_level" => {
                                cfg.log_level = match v {
                                    "error" => LevelFilter::Error,
                                    "warn" => LevelFilter::Warn,
                                    "info" => LevelFilter::Info,
                                    "debug" => LevelFilter::Debug,
                                    _ => {
                                        return Err(bad(format!(
                                            "{v:?} is not a log level (error, warn, info, debug)"
                                        )));
                                    }
                                }
                            }
                            "queue_base" => {
                                cfg.queue_base =
                                    parse_num(v, 0, u64::from(u16::MAX)).map_err(bad)?
                            }
                            "queue_maxlen" => {
                                cfg.queue_maxlen =
                                    parse_num(v, 1, u64::from(MAX_QUEUE_MAXLEN)).map_err(bad)?
                            }
                            _ => return Err(bad("unknown option in globals".into())),
                        }
                    }
                }
                "helper" => {
                    let h = Self::parse_helper(s, &err)?;
                    if let Some(other) = cfg.helpers.iter().find(|o| o.builtin == h.builtin) {
                        return Err(err(
                            s.line,
                            Some("name"),
                            format!(
                                "helper {} configured twice (also in section {})",
                                h.name(),
                                other.section.as_deref().unwrap_or("(anonymous)")
                            ),
                        ));
                    }
                    if cfg.helpers.push(h).is_err() {
                        return Err(err(
                            s.line,
                            None,
                            format!("more than {MAX_HELPERS} helper sections"),
                        ));
                    }
                }
                other => {
                    return Err(err(
                        s.line,
                        None,
                        format!("unknown section type {other:?} (globals, helper)"),
                    ));
                }
            }
        }
        // Every helper takes queue_base + its index, so the last one must still
        // be a valid queue number.
        if cfg.helpers.len() > 1
            && usize::from(cfg.queue_base) + cfg.helpers.len() - 1 > usize::from(u16::MAX)
        {
            let line = sections
                .iter()
                .filter(|s| s.kind == "globals")
                .flat_map(|s| s.options.iter())
                .find(|o| o.name == "queue_base")
                .map_or(0, |o| o.line);
            return Err(err(
                line,
                Some("queue_base"),
                format!(
                    "{} helpers need queues {}..{}, beyond 65535",
                    cfg.helpers.len(),
                    cfg.queue_base,
                    usize::from(cfg.queue_base) + cfg.helpers.len() - 1
                ),
            ));
        }
        Ok(cfg)
    }

    fn parse_helper(
        s: &uci::Section,
        err: &dyn Fn(usize, Option<&str>, String) -> ConfigError,
    ) -> Result<HelperConfig, ConfigError> {
        let name_opt = s
            .options
            .iter()
            .find(|o| o.name == "name")
            .ok_or_else(|| err(s.line, Some("name"), "missing in helper section".into()))?;
        let builtin = registry::find(&name_opt.value).ok_or_else(|| {
            err(
                name_opt.line,
                Some("name"),
                format!(
                    "no built-in helper named {:?} (available: {})",
                    name_opt.value,
                    registry::names()
                ),
            )
        })?;
        let mut h = HelperConfig::builtin_default(builtin);
        h.section = s.name.clone();
        let mut ports_given = false;
        for o in &s.options {
            let bad = |p: String| err(o.line, Some(&o.name), p);
            let v = o.value.as_str();
            if o.is_list && o.name != "port" {
                return Err(bad("is not a list (use option)".into()));
            }
            match o.name.as_str() {
                "name" => {}
                "enabled" => {
                    h.enabled = parse_bool(v)
                        .ok_or_else(|| bad(format!("{v:?} is not a boolean (0 or 1)")))?
                }
                "family" => {
                    h.families = match v {
                        "ipv4" => Families::Ipv4,
                        "ipv6" => Families::Ipv6,
                        "any" => Families::Any,
                        _ => return Err(bad(format!("{v:?} is not ipv4, ipv6 or any"))),
                    }
                }
                "proto" => {
                    let protos = match v {
                        "tcp" => Protos::TCP,
                        "udp" => Protos::UDP,
                        "any" => builtin.protos,
                        _ => return Err(bad(format!("{v:?} is not tcp, udp or any"))),
                    };
                    if !protos.is_subset_of(builtin.protos) {
                        return Err(bad(format!(
                            "helper {} runs on {} only",
                            builtin.name,
                            builtin.protos.label()
                        )));
                    }
                    h.protos = protos;
                }
                "port" => {
                    if !ports_given {
                        h.ports.clear();
                        ports_given = true;
                    }
                    // `option port '21 2121'` is the other UCI spelling of a list.
                    for p in v.split_ascii_whitespace() {
                        let port: u16 =
                            parse_num(p, u64::from(MIN_PORT), u64::from(u16::MAX)).map_err(bad)?;
                        if h.ports.contains(&port) {
                            return Err(bad(format!("port {port} listed twice")));
                        }
                        h.ports
                            .push(port)
                            .map_err(|_| bad(format!("more than {MAX_PORTS} ports")))?;
                    }
                    if v.split_ascii_whitespace().next().is_none() {
                        return Err(bad("empty port".into()));
                    }
                }
                "allow_low_ports" => {
                    h.allow_low_ports = parse_bool(v)
                        .ok_or_else(|| bad(format!("{v:?} is not a boolean (0 or 1)")))?
                }
                "sip_direct_media" | "sip_direct_signalling" | "sip_timeout"
                    if *builtin != registry::SIP =>
                {
                    return Err(bad(format!(
                        "is an option of helper sip, not of {}",
                        builtin.name
                    )));
                }
                "sip_direct_media" => {
                    h.sip.direct_media = parse_bool(v)
                        .ok_or_else(|| bad(format!("{v:?} is not a boolean (0 or 1)")))?
                }
                "sip_direct_signalling" => {
                    h.sip.direct_signalling = parse_bool(v)
                        .ok_or_else(|| bad(format!("{v:?} is not a boolean (0 or 1)")))?
                }
                "sip_timeout" => {
                    h.sip.timeout = parse_num(v, 1, u64::from(MAX_SIP_TIMEOUT)).map_err(bad)?
                }
                other => {
                    let (field, class) = parse_class_option(builtin, other)
                        .map_err(&bad)?
                        .ok_or_else(|| bad("unknown option in helper section".into()))?;
                    let limit = &mut h.classes[class];
                    match field {
                        ExpectField::Max => {
                            limit.expect_max =
                                parse_num(v, 1, u64::from(MAX_EXPECT_MAX)).map_err(bad)?
                        }
                        ExpectField::Timeout => {
                            limit.expect_timeout =
                                parse_num(v, 1, u64::from(MAX_EXPECT_TIMEOUT)).map_err(bad)?
                        }
                    }
                }
            }
        }
        Ok(h)
    }

    /// Read a file. `None` reads the default path, where a missing file means the
    /// built-in defaults; an explicitly named file must exist.
    pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p, true),
            None => (std::path::Path::new(DEFAULT_PATH), false),
        };
        let file = path.display().to_string();
        let io = |problem: String| ConfigError {
            file: file.clone(),
            line: 0,
            option: None,
            problem,
        };
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => return Err(io(format!("cannot read: {e}"))),
        };
        use std::io::Read;
        let mut bytes = Vec::new();
        f.take(uci::MAX_FILE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io(format!("cannot read: {e}")))?;
        if bytes.len() > uci::MAX_FILE {
            return Err(io(format!("larger than {} bytes", uci::MAX_FILE)));
        }
        let text = String::from_utf8(bytes).map_err(|_| io("not UTF-8 text".into()))?;
        Config::parse(&text, &file)
    }

    /// The configuration as UCI text; `Config::parse` reads it back unchanged.
    pub fn to_uci(&self) -> String {
        use core::fmt::Write;
        let b = |v: bool| if v { "1" } else { "0" };
        let mut s = String::new();
        let _ = writeln!(s, "config globals 'globals'");
        let _ = writeln!(s, "\toption enabled '{}'", b(self.enabled));
        let _ = writeln!(s, "\toption log_level '{}'", level_name(self.log_level));
        let _ = writeln!(s, "\toption syslog '{}'", b(self.syslog));
        let _ = writeln!(s, "\toption queue_base '{}'", self.queue_base);
        let _ = writeln!(s, "\toption queue_maxlen '{}'", self.queue_maxlen);
        let _ = writeln!(s, "\toption fail_open '{}'", b(self.fail_open));
        let _ = writeln!(s, "\toption firewall '{}'", b(self.firewall));
        for (i, h) in self.helpers.iter().enumerate() {
            let _ = writeln!(s);
            match &h.section {
                Some(name) => {
                    let _ = writeln!(s, "config helper {}", uci::quote(name));
                }
                None => {
                    let _ = writeln!(s, "config helper");
                }
            }
            let _ = writeln!(s, "\t# queue {}", self.queue_of(i));
            let _ = writeln!(s, "\toption name '{}'", h.name());
            let _ = writeln!(s, "\toption enabled '{}'", b(h.enabled));
            let _ = writeln!(s, "\toption family '{}'", h.families.as_str());
            let _ = writeln!(s, "\toption proto '{}'", h.proto_option());
            for p in &h.ports {
                let _ = writeln!(s, "\tlist port '{p}'");
            }
            for (option, value) in class_settings(h.builtin, &h.classes) {
                let _ = writeln!(s, "\toption {option} '{value}'");
            }
            let _ = writeln!(s, "\toption allow_low_ports '{}'", b(h.allow_low_ports));
            if *h.builtin == registry::SIP {
                let _ = writeln!(s, "\toption sip_direct_media '{}'", b(h.sip.direct_media));
                let _ = writeln!(
                    s,
                    "\toption sip_direct_signalling '{}'",
                    b(h.sip.direct_signalling)
                );
                let _ = writeln!(s, "\toption sip_timeout '{}'", h.sip.timeout);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../init.d/cthelperd.config");

    fn limits(expect_max: u32, expect_timeout: u32) -> Limits {
        Limits {
            expect_max,
            expect_timeout,
        }
    }

    #[test]
    fn default_serves_ftp_tftp_and_sip_on_both_families() {
        let c = Config::default();
        assert_eq!(c.helpers.len(), 3);
        let ftp = &c.helpers[0];
        assert_eq!(ftp.name(), "ftp");
        assert_eq!(
            ftp.families.iter().collect::<Vec<_>>(),
            vec![Family::Ipv4, Family::Ipv6]
        );
        assert_eq!(ftp.classes.as_slice(), [limits(1, 300)]);
        assert_eq!(c.queue_of(0), 48000);
        let tftp = &c.helpers[1];
        assert_eq!(tftp.name(), "tftp");
        assert_eq!(tftp.protos, Protos::UDP);
        assert_eq!(tftp.ports.as_slice(), &[69]);
        assert_eq!(
            tftp.families.iter().collect::<Vec<_>>(),
            vec![Family::Ipv4, Family::Ipv6]
        );
        assert_eq!(tftp.classes.as_slice(), [limits(1, 300)]);
        assert_eq!(c.queue_of(1), 48001);
        let sip = &c.helpers[2];
        assert_eq!(sip.name(), "sip");
        assert_eq!(sip.protos, Protos::TCP_UDP);
        assert_eq!(sip.proto_option(), "any");
        assert_eq!(sip.ports.as_slice(), &[5060]);
        assert_eq!(
            sip.classes.as_slice(),
            [
                limits(1, 180),
                limits(4, 180),
                limits(4, 180),
                limits(2, 180)
            ]
        );
        assert_eq!(sip.sip, crate::helpers::sip::Options::default());
        assert_eq!(c.queue_of(2), 48002);
    }

    #[test]
    fn default_queues_stay_clear_of_the_numbers_everyone_else_picks() {
        // 0 is the NFQUEUE default; the low numbers are what examples and people use.
        let c = Config::default();
        assert_eq!(c.queue_base, 48000);
        for i in 0..MAX_HELPERS {
            assert!(
                c.queue_of(i) >= 1024 && c.queue_of(i) < 65000,
                "{}",
                c.queue_of(i)
            );
        }
        let shipped = Config::parse(SHIPPED, "init.d/cthelperd.config").unwrap();
        assert_eq!(shipped.queue_base, 48000, "the shipped file says the same");
    }

    #[test]
    fn shipped_file_equals_the_built_in_defaults() {
        let shipped = Config::parse(SHIPPED, "init.d/cthelperd.config").unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn printed_configuration_reads_back_unchanged() {
        let mut c = Config::default();
        c.helpers[0].ports.push(2121).unwrap();
        c.helpers[1].enabled = false;
        c.helpers[1].families = Families::Ipv6;
        c.helpers[1].section = None;
        c.helpers[0].allow_low_ports = true;
        c.queue_base = 10;
        c.log_level = LevelFilter::Debug;
        c.syslog = true;
        for cfg in [Config::default(), c] {
            let text = cfg.to_uci();
            assert_eq!(Config::parse(&text, "printed").unwrap(), cfg, "{text}");
        }
    }

    #[test]
    fn globals_is_found_by_type_whatever_its_name() {
        // The init script (init.d/cthelperd) finds it the same way; tests/openwrt/test-init.sh.
        for head in [
            "config globals",
            "config globals 'globals'",
            "config globals 'main'",
        ] {
            let c = Config::parse(&format!("{head}\n\toption enabled 'off'\n"), "f").unwrap();
            assert!(!c.enabled, "{head}");
        }
        let late = "config helper\n\toption name 'ftp'\nconfig globals\n\toption enabled '0'\n";
        assert!(!Config::parse(late, "f").unwrap().enabled);
    }

    #[test]
    fn empty_file_means_no_helpers_and_default_globals() {
        let c = Config::parse("# nothing\n", "f").unwrap();
        assert!(c.helpers.is_empty());
        assert!(c.enabled && c.firewall);
    }

    #[test]
    fn helper_options_and_option_port_lists() {
        let c = Config::parse(
            "config helper\n option name ftp\n option family ipv4\n option port '21 2121'\n option expect_max 255\n option expect_timeout 60\n",
            "f",
        )
        .unwrap();
        let h = &c.helpers[0];
        assert_eq!(h.section, None);
        assert_eq!(h.families, Families::Ipv4);
        assert_eq!(h.protos, Protos::TCP, "proto defaults to the helper's own");
        assert_eq!(h.ports.as_slice(), &[21, 2121]);
        assert_eq!(h.classes.as_slice(), [limits(255, 60)]);
        assert!(!h.allow_low_ports, "off unless configured");
        let c = Config::parse(
            "config helper\n option name ftp\n option allow_low_ports 1\n",
            "f",
        )
        .unwrap();
        assert!(c.helpers[0].allow_low_ports);
        assert!(c.helpers[0].policy().allow_low_ports);
    }

    #[test]
    fn sip_options_reach_the_helper_and_print_back() {
        let c = Config::parse("config helper 'sip'\n option name sip\n", "f").unwrap();
        let sip = c.helpers[0].policy().sip;
        assert!(
            sip.direct_media && sip.direct_signalling,
            "the kernel's defaults"
        );
        assert_eq!(sip.timeout, 3600);
        let c = Config::parse(
            "config helper 'sip'\n option name sip\n option sip_direct_media 0\n option sip_direct_signalling 0\n option sip_timeout 7200\n",
            "f",
        )
        .unwrap();
        let sip = c.helpers[0].policy().sip;
        assert!(!sip.direct_media && !sip.direct_signalling);
        assert_eq!(sip.timeout, 7200);
        let text = c.to_uci();
        assert!(text.contains("\toption sip_direct_media '0'\n"), "{text}");
        assert!(text.contains("\toption sip_timeout '7200'\n"), "{text}");
        assert_eq!(Config::parse(&text, "f").unwrap(), c);
        // Only SIP's section has them.
        let ftp = Config::parse("config helper\n option name ftp\n", "f").unwrap();
        assert!(!ftp.to_uci().contains("sip_"));
    }

    fn error_of(body: &str) -> ConfigError {
        Config::parse(body, "/etc/config/cthelperd").unwrap_err()
    }

    #[test]
    fn bad_values_name_file_line_and_option() {
        let h = "config helper 'x'\n\toption name 'ftp'\n";
        let cases: Vec<(String, usize, Option<&str>, &str)> = vec![
            (format!("{h}\toption family 'ipv5'\n"), 3, Some("family"), "ipv5"),
            (format!("{h}\toption proto 'sctp'\n"), 3, Some("proto"), "sctp"),
            (format!("{h}\tlist port '0'\n"), 3, Some("port"), "out of range"),
            (format!("{h}\tlist port '70000'\n"), 3, Some("port"), "out of range"),
            (format!("{h}\tlist port 'ftp'\n"), 3, Some("port"), "not a number"),
            (format!("{h}\tlist port '21'\n\tlist port '21'\n"), 4, Some("port"), "twice"),
            (format!("{h}\toption expect_max '256'\n"), 3, Some("expect_max"), "out of range"),
            (format!("{h}\toption expect_max '0'\n"), 3, Some("expect_max"), "out of range"),
            (format!("{h}\toption expect_timeout '-1'\n"), 3, Some("expect_timeout"), "not a number"),
            (format!("{h}\toption loose '1'\n"), 3, Some("loose"), "unknown option"),
            (format!("{h}\toption enabled 'maybe'\n"), 3, Some("enabled"), "boolean"),
            (format!("{h}\toption allow_low_ports '22'\n"), 3, Some("allow_low_ports"), "boolean"),
            (format!("{h}\toption sip_timeout '60'\n"), 3, Some("sip_timeout"), "option of helper sip, not of ftp"),
            ("config helper\n\toption name 'sip'\n\toption sip_direct_media 'yes please'\n".into(), 3, Some("sip_direct_media"), "boolean"),
            ("config helper\n\toption name 'sip'\n\toption sip_timeout '0'\n".into(), 3, Some("sip_timeout"), "out of range"),
            ("config helper\n\toption name 'sip'\n\toption sip_timeout '432001'\n".into(), 3, Some("sip_timeout"), "out of range"),
            (format!("{h}\toption family 'any'\n\toption family 'ipv4'\n"), 4, Some("family"), "given twice"),
            (format!("{h}\tlist family 'any'\n"), 3, Some("family"), "not a list"),
            ("config helper 'x'\n\toption name 'irc'\n".into(), 2, Some("name"), "no built-in helper"),
            ("config helper 'x'\n\toption port '21'\n".into(), 1, Some("name"), "missing"),
            (format!("{h}config helper 'y'\n\toption name 'ftp'\n"), 3, Some("name"), "twice"),
            ("config globals\n\toption log_level 'loud'\n".into(), 2, Some("log_level"), "log level"),
            ("config globals\n\toption queue_base '65536'\n".into(), 2, Some("queue_base"), "out of range"),
            ("config globals\n\toption queue_maxlen '0'\n".into(), 2, Some("queue_maxlen"), "out of range"),
            ("config globals\n\toption fail_opne '1'\n".into(), 2, Some("fail_opne"), "unknown option"),
            ("config globals\nconfig globals\n".into(), 2, None, "second globals"),
            ("config helpers 'ftp'\n".into(), 1, None, "unknown section type"),
            ("config globals\n\toption queue_base '65535'\nconfig helper\n\toption name ftp\nconfig helper\n\toption name tftp\n".into(), 2, Some("queue_base"), "beyond 65535"),
            ("config globals\n\toption enabled '1' '2'\n".into(), 2, None, "expected: option"),
        ];
        for (text, line, option, what) in cases {
            let e = error_of(&text);
            assert_eq!(
                (e.line, e.option.as_deref()),
                (line, option),
                "{text:?}: {e}"
            );
            assert!(e.problem.contains(what), "{text:?}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/config/cthelperd:{line}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn too_many_helpers_or_ports() {
        let mut text = String::new();
        for _ in 0..MAX_HELPERS + 1 {
            text.push_str("config helper\n\toption name 'ftp'\n");
        }
        // (duplicate names are caught first; the bound is checked on distinct names
        // once more helpers exist, so here the second section fails)
        assert!(error_of(&text).problem.contains("twice"));
        let ports: String = (1..=9).map(|p| format!("\tlist port '{p}'\n")).collect();
        let e = error_of(&format!("config helper\n\toption name 'ftp'\n{ports}"));
        assert_eq!((e.line, e.problem.as_str()), (11, "more than 8 ports"));
    }

    /// A section for the registry's SIP-shaped test entry (tcp+udp, four classes).
    fn sipmock(body: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!(
                "config helper 'voice'\n\toption name '{}'\n{body}",
                registry::test_entry::NAME
            ),
            "/etc/config/cthelperd",
        )
    }

    #[test]
    fn a_helper_with_several_classes_takes_per_class_limits() {
        let c =
            sipmock("\toption expect_max_audio '8'\n\toption expect_timeout_image '60'\n").unwrap();
        let h = &c.helpers[0];
        assert_eq!(
            h.classes.as_slice(),
            [
                limits(1, 180),
                limits(8, 180),
                limits(4, 180),
                limits(2, 60)
            ],
            "registry defaults except what the file says"
        );
        assert_eq!(h.protos, Protos::TCP_UDP, "every protocol of the helper");
        assert_eq!(h.ports.as_slice(), &[registry::test_entry::PORT]);
        assert!(
            Config::default()
                .helpers
                .iter()
                .all(|h| h.name() != registry::test_entry::NAME),
            "not in the defaults"
        );
    }

    #[test]
    fn proto_restricts_a_helper_to_its_own_protocols() {
        let proto = |body: &str| sipmock(body).map(|c| c.helpers[0].protos);
        assert_eq!(proto("\toption proto 'udp'\n"), Ok(Protos::UDP));
        assert_eq!(proto("\toption proto 'tcp'\n"), Ok(Protos::TCP));
        assert_eq!(proto("\toption proto 'any'\n"), Ok(Protos::TCP_UDP));
        let ftp = Config::parse(
            "config helper\n\toption name 'ftp'\n\toption proto 'any'\n",
            "f",
        )
        .unwrap();
        assert_eq!(ftp.helpers[0].protos, Protos::TCP, "any: all of ftp's, tcp");
    }

    #[test]
    fn class_and_protocol_mistakes_name_file_line_and_option() {
        let ftp = "config helper 'x'\n\toption name 'ftp'\n";
        let cases: Vec<(Result<Config, ConfigError>, Option<&str>, &str)> = vec![
            (
                sipmock("\toption expect_max '4'\n"),
                Some("expect_max"),
                "4 expectation classes (signalling, audio, video, image): use expect_max_<class>",
            ),
            (
                sipmock("\toption expect_timeout_text '4'\n"),
                Some("expect_timeout_text"),
                "no expectation class \"text\"",
            ),
            (
                sipmock("\toption expect_max_audio '256'\n"),
                Some("expect_max_audio"),
                "out of range",
            ),
            (
                sipmock("\toption expect_timeout_video '0'\n"),
                Some("expect_timeout_video"),
                "out of range",
            ),
            (
                sipmock("\toption expect_max_audio '4'\n\toption expect_max_audio '5'\n"),
                Some("expect_max_audio"),
                "given twice",
            ),
            (
                sipmock("\toption proto 'sctp'\n"),
                Some("proto"),
                "is not tcp, udp or any",
            ),
            (
                Config::parse(&format!("{ftp}\toption expect_max_ftp '2'\n"), "f"),
                Some("expect_max_ftp"),
                "one expectation class: use expect_max",
            ),
            (
                Config::parse(&format!("{ftp}\toption proto 'udp'\n"), "f"),
                Some("proto"),
                "helper ftp runs on tcp only",
            ),
            (
                Config::parse(&format!("{ftp}\toption expect_maxi '2'\n"), "f"),
                Some("expect_maxi"),
                "unknown option",
            ),
        ];
        for (result, option, what) in cases {
            let e = result.unwrap_err();
            let line = if what == "given twice" { 4 } else { 3 };
            assert_eq!(e.line, line, "{e}");
            assert_eq!(e.option.as_deref(), option, "{e}");
            assert!(e.problem.contains(what), "{e}");
        }
    }

    #[test]
    fn per_class_limits_and_protocols_print_back_and_read_back() {
        let c =
            sipmock("\toption expect_max_audio '8'\n\toption expect_timeout_image '60'\n").unwrap();
        let text = c.to_uci();
        for line in [
            "\toption proto 'any'\n",
            "\toption expect_max_signalling '1'\n\toption expect_timeout_signalling '180'\n",
            "\toption expect_max_audio '8'\n",
            "\toption expect_timeout_image '60'\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        assert!(!text.contains("\toption expect_max '"), "{text}");
        assert_eq!(Config::parse(&text, "printed").unwrap(), c);
        let udp = sipmock("\toption proto 'udp'\n").unwrap();
        let text = udp.to_uci();
        assert!(text.contains("\toption proto 'udp'\n"), "{text}");
        assert_eq!(Config::parse(&text, "printed").unwrap(), udp);
        // a single-class, single-protocol helper prints as before
        let text = Config::default().to_uci();
        assert!(
            text.contains(
                "\toption proto 'tcp'\n\tlist port '21'\n\toption expect_max '1'\n\toption expect_timeout '300'\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn missing_default_file_means_defaults_but_a_named_file_must_exist() {
        let missing = std::path::Path::new("/nonexistent/cthelperd");
        let e = Config::load(Some(missing)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/cthelperd: cannot read"),
            "{e}"
        );
    }
}
