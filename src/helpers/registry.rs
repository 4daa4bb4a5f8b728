//! The one table of built-in helpers. Per helper: the kernel name, the L4 protocols it
//! runs on, its default ports, its expectation classes (one cthelper policy each, with
//! default limits), its private-data length and its code. The configuration's defaults
//! and names, the kernel registration, the firewall wiring, `replay`'s helper assignment
//! and the class an expectation counts against all come from here: a new helper is one
//! entry (and its module).

use crate::helpers::{Helper, ftp, sip, tftp};
use crate::model::{IPPROTO_TCP, IPPROTO_UDP};
use crate::netlink::cthelper;

/// Most expectation classes one helper has: the kernel's NF_CT_MAX_EXPECT_CLASSES, the
/// most policies a cthelper registration carries.
pub const MAX_CLASSES: usize = cthelper::MAX_POLICIES;

/// The L4 protocols a helper runs on (a subset of TCP and UDP). A helper is registered
/// once per protocol (and family): the kernel keys user-space helpers by name and tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protos(u8);

/// The protocols a set can hold, in the order every listing uses (registration, firewall
/// objects and rules, status).
const PROTO_ORDER: [u8; 2] = [IPPROTO_TCP, IPPROTO_UDP];
const TCP_BIT: u8 = 1 << 0;
const UDP_BIT: u8 = 1 << 1;

impl Protos {
    pub const TCP: Protos = Protos(TCP_BIT);
    pub const UDP: Protos = Protos(UDP_BIT);
    pub const TCP_UDP: Protos = Protos(TCP_BIT | UDP_BIT);

    const fn bit(proto: u8) -> u8 {
        match proto {
            IPPROTO_TCP => TCP_BIT,
            IPPROTO_UDP => UDP_BIT,
            _ => 0,
        }
    }

    /// The set holding only `proto` (None for a protocol no helper runs on).
    pub const fn of(proto: u8) -> Option<Protos> {
        match Self::bit(proto) {
            0 => None,
            bit => Some(Protos(bit)),
        }
    }

    pub const fn contains(self, proto: u8) -> bool {
        let bit = Self::bit(proto);
        bit != 0 && self.0 & bit == bit
    }

    pub const fn is_subset_of(self, other: Protos) -> bool {
        self.0 & other.0 == self.0
    }

    pub fn iter(self) -> impl Iterator<Item = u8> {
        PROTO_ORDER.into_iter().filter(move |p| self.contains(*p))
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// "tcp", "udp" or "tcp+udp" (as `status` shows families: "ipv4+ipv6").
    pub fn label(self) -> &'static str {
        match self.0 {
            TCP_BIT => "tcp",
            UDP_BIT => "udp",
            0 => "none",
            _ => "tcp+udp",
        }
    }
}

/// One expectation class: a cthelper policy (its name is also the kernel's policy name
/// and, for a helper with several classes, the suffix of its UCI options) and the limits
/// it has unless the configuration says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectClass {
    pub name: &'static str,
    /// How many expectations of this class one master may have pending.
    pub expect_max: u32,
    /// Seconds an expectation of this class waits for its connection.
    pub expect_timeout: u32,
}

/// One built-in helper.
pub struct Builtin {
    /// The kernel helper name (standard names keep `ct helper set "ftp"` rules working).
    pub name: &'static str,
    /// The L4 protocols it runs on; the configuration may restrict it to some of them.
    pub protos: Protos,
    /// The ports the firewall wiring assigns it to by default (on each of its protocols).
    pub ports: &'static [u16],
    /// Its expectation classes, in policy order: an expectation's `class` indexes this.
    pub classes: &'static [ExpectClass],
    /// Bytes of private data per conntrack, registered with the kernel.
    pub private_len: usize,
    /// Entries of the helper's [`Store`](crate::helpers::Store) (0: it keeps nothing
    /// there, and no table is allocated).
    pub store_entries: usize,
    /// Whether it reassembles messages split across TCP segments (its store then has
    /// the stream buffers).
    pub stream_buffers: bool,
    /// Whether some packets of its expected connections are analysed (the code's
    /// `Helper::helps_expected` decides which); otherwise they are accepted unparsed.
    pub helps_expected: bool,
    /// Expected connections the firewall wiring assigns the helper to whatever their
    /// port: (protocol, nft match on the first packet). Kernels from the 2026 stable
    /// changes ignore the helper an expectation names (CTA_EXPECT_HELP_NAME), so the
    /// call a SIP registration admits on a contact port no rule covers would go
    /// unhelped; its first datagram is the INVITE, which a media stream never starts
    /// with.
    pub expected_rule: Option<(u8, &'static str)>,
    /// Part of the default configuration (and so of the shipped file, which equals it).
    pub default_on: bool,
    /// The code.
    pub helper: &'static dyn Helper,
}

impl core::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Builtin")
            .field("name", &self.name)
            .field("protos", &self.protos)
            .field("ports", &self.ports)
            .field("classes", &self.classes)
            .field("private_len", &self.private_len)
            .field("store_entries", &self.store_entries)
            .field("default_on", &self.default_on)
            .finish_non_exhaustive()
    }
}

/// Entries are told apart by their kernel name, which is unique in the table.
impl PartialEq for Builtin {
    fn eq(&self, other: &Builtin) -> bool {
        self.name == other.name
    }
}

impl Eq for Builtin {}

impl Builtin {
    /// The index of the class named `name`.
    pub fn class(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }
}

/// The index of class `name` in `classes`, for the class constants below: a name that is
/// not there fails the build.
const fn class_index(classes: &[ExpectClass], name: &str) -> u32 {
    let mut i = 0;
    while i < classes.len() {
        if const_str_eq(classes[i].name, name) {
            return i as u32;
        }
        i += 1;
    }
    panic!("no such expectation class")
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// How long an FTP or TFTP data connection may take to show up (the kernel's 300 s).
const DATA_EXPECT_TIMEOUT: u32 = 300;

const FTP_CLASSES: &[ExpectClass] = &[ExpectClass {
    name: "ftp",
    expect_max: 1,
    expect_timeout: DATA_EXPECT_TIMEOUT,
}];
/// The class FTP data connections count against.
pub const FTP_DATA: u32 = class_index(FTP_CLASSES, "ftp");

const TFTP_CLASSES: &[ExpectClass] = &[ExpectClass {
    name: "tftp",
    expect_max: 1,
    expect_timeout: DATA_EXPECT_TIMEOUT,
}];
/// The class the TFTP server's answer counts against.
pub const TFTP_DATA: u32 = class_index(TFTP_CLASSES, "tftp");

pub const FTP: Builtin = Builtin {
    name: "ftp",
    protos: Protos::TCP,
    ports: &[ftp::PORT],
    classes: FTP_CLASSES,
    private_len: ftp::PRIVATE_LEN,
    store_entries: 0,
    stream_buffers: false,
    helps_expected: false,
    expected_rule: None,
    default_on: true,
    helper: &ftp::Ftp,
};

pub const TFTP: Builtin = Builtin {
    name: "tftp",
    protos: Protos::UDP,
    ports: &[tftp::PORT],
    classes: TFTP_CLASSES,
    private_len: tftp::PRIVATE_LEN,
    store_entries: 0,
    stream_buffers: false,
    helps_expected: false,
    expected_rule: None,
    default_on: true,
    helper: &tftp::Tftp,
};

/// How long a SIP media or registration expectation waits (the kernel's 3 minutes).
const SIP_EXPECT_TIMEOUT: u32 = 180;

/// The kernel's nf_conntrack_sip policy: one signalling expectation (a registration),
/// RTP and RTCP of two audio and two video streams, two for T.38.
const SIP_CLASSES: &[ExpectClass] = &[
    ExpectClass {
        name: "signalling",
        expect_max: 1,
        expect_timeout: SIP_EXPECT_TIMEOUT,
    },
    ExpectClass {
        name: "audio",
        expect_max: 4,
        expect_timeout: SIP_EXPECT_TIMEOUT,
    },
    ExpectClass {
        name: "video",
        expect_max: 4,
        expect_timeout: SIP_EXPECT_TIMEOUT,
    },
    ExpectClass {
        name: "image",
        expect_max: 2,
        expect_timeout: SIP_EXPECT_TIMEOUT,
    },
];
// The helper numbers its classes as the kernel does.
const _: () =
    assert!(class_index(SIP_CLASSES, "signalling") == sip::media::Class::Signalling as u32);
const _: () = assert!(class_index(SIP_CLASSES, "audio") == sip::media::Class::Audio as u32);
const _: () = assert!(class_index(SIP_CLASSES, "video") == sip::media::Class::Video as u32);
const _: () = assert!(class_index(SIP_CLASSES, "image") == sip::media::Class::Image as u32);

/// SIP on UDP and TCP.
pub const SIP: Builtin = Builtin {
    name: "sip",
    protos: Protos::TCP_UDP,
    ports: &[sip::PORT],
    classes: SIP_CLASSES,
    private_len: sip::PRIVATE_LEN,
    store_entries: crate::helpers::STORE_ENTRIES,
    stream_buffers: true,
    helps_expected: true,
    // UDP payload (after the 8-byte header) beginning "INVITE".
    expected_rule: Some((IPPROTO_UDP, "@th,64,48 0x494e56495445")),
    default_on: true,
    helper: &sip::Sip,
};

/// Every built-in helper, in the order of the default configuration.
#[cfg(not(test))]
pub const BUILTINS: &[Builtin] = &[FTP, TFTP, SIP];
/// In unit tests the table also holds an entry of SIP's shape (two protocols, four
/// classes), so that configuration, registration, reload and firewall are tested with it.
#[cfg(test)]
pub const BUILTINS: &[Builtin] = &[FTP, TFTP, SIP, test_entry::SIPMOCK];

/// The built-in helper with kernel name `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The built-in names, for error messages ("ftp, tftp").
pub fn names() -> String {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub mod test_entry {
    //! A helper of SIP's shape, in the table only in unit tests: UDP and TCP, four
    //! classes with SIP's limits (signalling 1, audio 4, video 4, image 2; 180 s each).
    //! Its code is TFTP's: only the table's shape matters here.
    use super::*;

    pub const NAME: &str = "sipmock";
    pub const PORT: u16 = 5060;
    const MEDIA_EXPECT_TIMEOUT: u32 = 180;
    pub const CLASSES: &[ExpectClass] = &[
        ExpectClass {
            name: "signalling",
            expect_max: 1,
            expect_timeout: MEDIA_EXPECT_TIMEOUT,
        },
        ExpectClass {
            name: "audio",
            expect_max: 4,
            expect_timeout: MEDIA_EXPECT_TIMEOUT,
        },
        ExpectClass {
            name: "video",
            expect_max: 4,
            expect_timeout: MEDIA_EXPECT_TIMEOUT,
        },
        ExpectClass {
            name: "image",
            expect_max: 2,
            expect_timeout: MEDIA_EXPECT_TIMEOUT,
        },
    ];
    pub const AUDIO: u32 = class_index(CLASSES, "audio");
    pub const SIPMOCK: Builtin = Builtin {
        name: NAME,
        protos: Protos::TCP_UDP,
        ports: &[PORT],
        classes: CLASSES,
        private_len: tftp::PRIVATE_LEN,
        store_entries: crate::helpers::STORE_ENTRIES,
        stream_buffers: false,
        helps_expected: false,
        expected_rule: None,
        default_on: false,
        helper: &tftp::Tftp,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MAX_EXPECT_MAX, MAX_EXPECT_TIMEOUT, MAX_HELPERS, MAX_PORTS};
    use crate::helpers::PRIVATE_DATA_MAX;

    fn uci_identifier(s: &str) -> bool {
        crate::config::uci::is_identifier(s)
    }

    #[test]
    fn every_entry_fits_the_kernel_the_configuration_and_nft() {
        assert!(BUILTINS.len() <= MAX_HELPERS);
        for (i, b) in BUILTINS.iter().enumerate() {
            assert!(
                !b.name.is_empty() && b.name.len() <= cthelper::NAME_MAX,
                "{b:?}"
            );
            // also a bare nft object name and an unquoted UCI value
            assert!(
                b.name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{b:?}"
            );
            assert!(
                !BUILTINS[..i].iter().any(|o| o.name == b.name),
                "{} twice",
                b.name
            );
            assert!(!b.protos.is_empty(), "{b:?}");
            assert!(!b.ports.is_empty() && b.ports.len() <= MAX_PORTS, "{b:?}");
            assert!(!b.ports.contains(&0), "{b:?}");
            assert!(b.private_len <= PRIVATE_DATA_MAX, "{b:?}");
            assert!(
                !b.classes.is_empty() && b.classes.len() <= MAX_CLASSES,
                "{b:?}"
            );
            for (j, c) in b.classes.iter().enumerate() {
                assert!(c.name.len() <= cthelper::NAME_MAX, "{c:?}");
                // `expect_max_<class>` must be a UCI option name
                assert!(
                    uci_identifier(&format!("expect_timeout_{}", c.name)),
                    "{c:?}"
                );
                assert!((1..=MAX_EXPECT_MAX).contains(&c.expect_max), "{c:?}");
                assert!(
                    (1..=MAX_EXPECT_TIMEOUT).contains(&c.expect_timeout),
                    "{c:?}"
                );
                assert_eq!(b.class(c.name), Some(j));
            }
        }
    }

    #[test]
    fn ftp_tftp_and_sip_are_what_the_readme_promises() {
        let ftp = find("ftp").unwrap();
        assert_eq!((ftp.protos, ftp.ports), (Protos::TCP, &[21u16][..]));
        assert_eq!(
            ftp.classes,
            &[ExpectClass {
                name: "ftp",
                expect_max: 1,
                expect_timeout: 300
            }]
        );
        assert_eq!(ftp.private_len, 32);
        assert!(ftp.default_on);
        let tftp = find("tftp").unwrap();
        assert_eq!((tftp.protos, tftp.ports), (Protos::UDP, &[69u16][..]));
        assert_eq!(tftp.classes.len(), 1);
        assert_eq!(
            (tftp.classes[0].name, tftp.classes[0].expect_max),
            ("tftp", 1)
        );
        assert_eq!(tftp.private_len, 0);
        assert_eq!((FTP_DATA, TFTP_DATA), (0, 0));
        assert!(find("FTP").is_none());
        assert_eq!(names(), "ftp, tftp, sip, sipmock");
        // SIP: UDP and TCP, the kernel's four classes, on by default.
        let sip = find("sip").unwrap();
        assert_eq!((sip.protos, sip.ports), (Protos::TCP_UDP, &[5060u16][..]));
        let classes: Vec<_> = sip
            .classes
            .iter()
            .map(|c| (c.name, c.expect_max, c.expect_timeout))
            .collect();
        assert_eq!(
            classes,
            vec![
                ("signalling", 1, 180),
                ("audio", 4, 180),
                ("video", 4, 180),
                ("image", 2, 180)
            ]
        );
        assert!(sip.stream_buffers && sip.default_on);
    }

    #[test]
    fn a_sip_shaped_entry_has_two_protocols_and_four_classes() {
        let s = find(test_entry::NAME).unwrap();
        assert_eq!(
            s.protos.iter().collect::<Vec<_>>(),
            [IPPROTO_TCP, IPPROTO_UDP]
        );
        assert_eq!(s.classes.len(), MAX_CLASSES);
        assert_eq!(s.class("audio"), Some(test_entry::AUDIO as usize));
        assert_eq!(s.class("text"), None);
        assert!(!s.default_on);
    }

    #[test]
    fn protocol_sets() {
        assert_eq!(Protos::of(IPPROTO_TCP), Some(Protos::TCP));
        assert_eq!(Protos::of(1), None);
        assert!(Protos::TCP_UDP.contains(IPPROTO_UDP));
        assert!(!Protos::TCP.contains(IPPROTO_UDP));
        assert!(!Protos::TCP.contains(0));
        assert!(Protos::UDP.is_subset_of(Protos::TCP_UDP));
        assert!(!Protos::TCP_UDP.is_subset_of(Protos::UDP));
        assert_eq!(
            [Protos::TCP, Protos::UDP, Protos::TCP_UDP].map(|p| (p.label(), p.len())),
            [("tcp", 1), ("udp", 1), ("tcp+udp", 2)]
        );
        assert_eq!(Protos::UDP.iter().collect::<Vec<_>>(), [IPPROTO_UDP]);
    }
}
