//! Daemon configuration. Today: the built-in defaults (the UCI file format comes
//! with the OpenWrt integration).

use crate::conntrack::{Family, IPPROTO_TCP, IPPROTO_UDP};

/// Most helpers one daemon serves.
pub const MAX_HELPERS: usize = 4;

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperConfig {
    /// Kernel helper name; the standard names keep `ct helper set "ftp"` rules working.
    pub name: &'static str,
    pub enabled: bool,
    pub families: Families,
    pub proto: u8,
    /// Well-known ports (used by the firewall wiring, not by the kernel registration).
    pub ports: heapless::Vec<u16, 8>,
    pub expect_max: u32,
    pub expect_timeout: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Queue of the first helper; each further helper takes the next number.
    pub queue_base: u16,
    pub queue_maxlen: u32,
    /// When a queue is full, accept packets unparsed instead of dropping them.
    pub fail_open: bool,
    pub helpers: heapless::Vec<HelperConfig, MAX_HELPERS>,
}

impl Default for Config {
    fn default() -> Self {
        let mut helpers = heapless::Vec::new();
        let mut ftp_ports = heapless::Vec::new();
        let _ = ftp_ports.push(21);
        let _ = helpers.push(HelperConfig {
            name: "ftp",
            enabled: true,
            families: Families::Any,
            proto: IPPROTO_TCP,
            ports: ftp_ports,
            expect_max: 1,
            expect_timeout: 300,
        });
        let mut tftp_ports = heapless::Vec::new();
        let _ = tftp_ports.push(69);
        let _ = helpers.push(HelperConfig {
            name: "tftp",
            enabled: true,
            families: Families::Any,
            proto: IPPROTO_UDP,
            ports: tftp_ports,
            expect_max: 1,
            expect_timeout: 300,
        });
        Config {
            queue_base: 0,
            queue_maxlen: 1024,
            fail_open: false,
            helpers,
        }
    }
}

impl Config {
    /// The queue number of the helper at `index`.
    pub fn queue_of(&self, index: usize) -> u16 {
        self.queue_base.wrapping_add(index as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_serves_ftp_and_tftp_on_both_families() {
        let c = Config::default();
        assert_eq!(c.helpers.len(), 2);
        let ftp = &c.helpers[0];
        assert_eq!(ftp.name, "ftp");
        assert_eq!(
            ftp.families.iter().collect::<Vec<_>>(),
            vec![Family::Ipv4, Family::Ipv6]
        );
        assert_eq!((ftp.expect_max, ftp.expect_timeout), (1, 300));
        assert_eq!(c.queue_of(0), 0);
        let tftp = &c.helpers[1];
        assert_eq!(tftp.name, "tftp");
        assert_eq!(tftp.proto, IPPROTO_UDP);
        assert_eq!(tftp.ports.as_slice(), &[69]);
        assert_eq!(
            tftp.families.iter().collect::<Vec<_>>(),
            vec![Family::Ipv4, Family::Ipv6]
        );
        assert_eq!((tftp.expect_max, tftp.expect_timeout), (1, 300));
        assert_eq!(c.queue_of(1), 1);
    }
}
