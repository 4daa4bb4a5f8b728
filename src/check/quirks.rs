//! The running kernel's version and the behaviours of it this daemon knows about
//! (`cthelperd check` prints them). Versions are upstream ones: Debian names its
//! kernels by ABI ("6.1.0-57-amd64") and says the upstream version in /proc/version
//! ("... Debian 6.1.172-1 ..."); OpenWrt's release is the upstream version itself.

/// An upstream kernel version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// "6.1.172" (and "6.6", "6.12.81-1", "6.6.73-rc1"): the leading numbers.
fn parse_version(text: &str) -> Option<Version> {
    let mut nums = text.split(['.', '-', '+', '~']).map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = nums.next()??;
    let minor = nums.next()??;
    let patch = nums.next().flatten().unwrap_or(0);
    Some(Version {
        major,
        minor,
        patch,
    })
}

/// The upstream version from /proc/version's text: Debian's "Debian 6.1.172-1" at the
/// end if present (its release name is an ABI number; the compiler's "(Debian 12.2.0...)"
/// comes earlier), else the release after "Linux version".
pub fn running_version(proc_version: &str) -> Option<Version> {
    if let Some(at) = proc_version.rfind("Debian ") {
        let rest = &proc_version[at + "Debian ".len()..];
        if let Some(v) = parse_version(rest) {
            return Some(v);
        }
    }
    let rest = proc_version.strip_prefix("Linux version ")?;
    parse_version(rest)
}

/// A kernel behaviour that matters to the daemon, and the versions that have it.
pub struct Quirk {
    /// Inclusive version ranges.
    pub ranges: &'static [(Version, Version)],
    pub text: &'static str,
}

const fn v(major: u32, minor: u32, patch: u32) -> Version {
    Version {
        major,
        minor,
        patch,
    }
}

/// What is known, from Debian's changelogs and the VM scenarios (issue #15).
pub const QUIRKS: &[Quirk] = &[
    Quirk {
        // "nf_conntrack_expect: honor expectation helper field" with "ctnetlink: ignore
        // explicit helper on new expectations" until "restore helper propagation via
        // expectation".
        ranges: &[(v(6, 1, 168), v(6, 1, 182)), (v(6, 12, 81), v(6, 12, 102))],
        text: "expected connections inherit their master's helper: every data packet of a \
               helped protocol is queued to the daemon (accepted at once, counted as \
               expected_passed in `cthelperd status`)",
    },
    Quirk {
        ranges: &[(v(6, 1, 0), v(6, 1, u32::MAX))],
        text: "the verdict path records TCP sequence adjustments for IPv4 only: for a \
               length-changing NAT rewrite on IPv6 the daemon sets the adjustment over \
               ctnetlink",
    },
];

/// The known quirks of `version`.
pub fn quirks_of(version: Version) -> impl Iterator<Item = &'static Quirk> {
    QUIRKS.iter().filter(move |q| {
        q.ranges
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&version))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "Linux version 6.1.0-48-amd64 (debian-kernel@lists.debian.org) \
        (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) \
        #1 SMP PREEMPT_DYNAMIC Debian 6.1.172-1 (2026-03-01)\n";

    #[test]
    fn versions_from_proc_version() {
        // Debian: the package version, not the ABI name (and not gcc's "Debian 12.2.0").
        assert_eq!(running_version(DEBIAN), Some(v(6, 1, 172)));
        assert_eq!(
            running_version(
                "Linux version 6.6.73 (builder@buildhost) (mipsel-openwrt-linux-musl-gcc) #0 SMP\n"
            ),
            Some(v(6, 6, 73))
        );
        assert_eq!(running_version("Linux version 7.3 (x)"), Some(v(7, 3, 0)));
        assert_eq!(running_version("garbage"), None);
        assert_eq!(v(6, 12, 81).to_string(), "6.12.81");
    }

    #[test]
    fn quirks_by_version() {
        let texts = |ver| quirks_of(ver).map(|q| q.text).collect::<Vec<_>>();
        assert_eq!(texts(v(6, 1, 172)).len(), 2, "inside the window, and 6.1");
        assert_eq!(texts(v(6, 1, 182)).len(), 2);
        assert_eq!(texts(v(6, 1, 183)).len(), 1, "6.1 after the window");
        assert_eq!(texts(v(6, 12, 95)).len(), 1);
        assert!(texts(v(6, 12, 95))[0].contains("inherit"));
        assert!(texts(v(6, 12, 117)).is_empty());
        assert!(texts(v(6, 6, 73)).is_empty());
    }
}
