//! nfnetlink_queue: binding a queue, decoding queued packets and writing verdicts.

use super::attr::{Attr, Writer};
use super::ctnetlink::{CTA_HELP, CTA_HELP_INFO, CTA_HELP_NAME, CTA_TIMEOUT, put_expectation};
use super::msg::{Message, NFNETLINK_V0, NLM_F_ACK, NLM_F_REQUEST, NfGenMsg};
use super::{Error, Result, nfnl_type, subsys};
use crate::model::Expectation;

pub const NFQNL_MSG_PACKET: u8 = 0;
pub const NFQNL_MSG_VERDICT: u8 = 1;
pub const NFQNL_MSG_CONFIG: u8 = 2;
pub const NFQNL_MSG_VERDICT_BATCH: u8 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CT: u16 = 11;
const NFQA_CT_INFO: u16 = 12;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_EXP: u16 = 15;
const NFQA_TABLE: usize = 22;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;

pub const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
pub const NFQA_CFG_F_CONNTRACK: u32 = 2;
/// Queue GSO packets whole instead of having the kernel segment them first.
pub const NFQA_CFG_F_GSO: u32 = 4;

pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;
/// A packet leaves its hook at once (the kernel keeps this verdict for user-space
/// queues only).
pub const NF_STOP: u32 = 5;

/// The verdict that lets a packet go on. Not NF_ACCEPT: on reinjection the kernel
/// adjusts the TCP sequence numbers of a connection with a user-space helper and
/// confirms it (nf_conntrack_update); NF_ACCEPT then runs the rest of the hook, whose
/// conntrack confirmation (nf_confirm) adjusts them a second time when the table queued
/// the packet before it. NF_STOP skips that rest: the packet leaves as one from the
/// helper hook does, which queues from within nf_confirm, after which nothing runs. The
/// table's queue chains sit just before nf_confirm (firewall.rs), so NF_STOP skips
/// nothing else there.
pub const PASS: u32 = NF_STOP;

/// Largest packet we ask the kernel to copy (the copy range is 16 bits).
pub const COPY_RANGE: u32 = 0xffff;

fn config_header(w: &mut Writer<'_>, seq: u32, queue: u16) -> Result<super::attr::Mark> {
    w.begin_nfnl(
        nfnl_type(subsys::QUEUE, NFQNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NfGenMsg {
            family: 0,
            version: NFNETLINK_V0,
            res_id: queue,
        },
    )
}

/// Queue settings applied at bind time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub queue: u16,
    pub max_len: u32,
    /// Accept packets unparsed instead of dropping them when the queue is full.
    pub fail_open: bool,
    /// Take GSO packets whole (NFQA_CFG_F_GSO): one queued packet for what the sender
    /// handed over at once (up to 64 KiB of TCP) instead of one per segment, with the
    /// TCP checksum possibly not computed yet (nothing here reads it; a rewrite
    /// computes it afresh, and the kernel redoes it when it segments a rewritten
    /// packet). Only for queues of TCP helpers: a UDP GSO packet holds several
    /// datagrams, which a UDP helper would read as one message.
    pub gso: bool,
}

/// One CONFIG message: bind `queue` to this socket, copy whole packets, deliver the
/// conntrack with each packet, set the queue length and the fail-open choice.
pub fn write_bind(w: &mut Writer<'_>, seq: u32, cfg: &QueueConfig) -> Result<()> {
    let m = config_header(w, seq, cfg.queue)?;
    w.put(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])?;
    put_params(w, cfg)?;
    w.end_msg(m)
}

/// CONFIG without a command: new length and fail-open choice for a queue this
/// socket already bound (a second BIND would fail with EBUSY).
pub fn write_params(w: &mut Writer<'_>, seq: u32, cfg: &QueueConfig) -> Result<()> {
    let m = config_header(w, seq, cfg.queue)?;
    put_params(w, cfg)?;
    w.end_msg(m)
}

fn put_params(w: &mut Writer<'_>, cfg: &QueueConfig) -> Result<()> {
    let mut params = [0u8; 5];
    params[..4].copy_from_slice(&COPY_RANGE.to_be_bytes());
    params[4] = NFQNL_COPY_PACKET;
    w.put(NFQA_CFG_PARAMS, &params)?;
    w.put_be32(NFQA_CFG_QUEUE_MAXLEN, cfg.max_len)?;
    let mask = NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
    let flag = |on: bool, f: u32| if on { f } else { 0 };
    let flags = NFQA_CFG_F_CONNTRACK
        | flag(cfg.fail_open, NFQA_CFG_F_FAIL_OPEN)
        | flag(cfg.gso, NFQA_CFG_F_GSO);
    w.put_be32(NFQA_CFG_MASK, mask)?;
    w.put_be32(NFQA_CFG_FLAGS, flags)
}

/// CONFIG with only a BIND command (used to probe for the queue subsystem).
pub fn write_bind_only(w: &mut Writer<'_>, seq: u32, queue: u16) -> Result<()> {
    let m = config_header(w, seq, queue)?;
    w.put(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])?;
    w.end_msg(m)
}

/// CONFIG changing only the queue flags selected by `mask`.
pub fn write_flags(w: &mut Writer<'_>, seq: u32, queue: u16, flags: u32, mask: u32) -> Result<()> {
    let m = config_header(w, seq, queue)?;
    w.put_be32(NFQA_CFG_MASK, mask)?;
    w.put_be32(NFQA_CFG_FLAGS, flags)?;
    w.end_msg(m)
}

pub fn write_unbind(w: &mut Writer<'_>, seq: u32, queue: u16) -> Result<()> {
    let m = config_header(w, seq, queue)?;
    w.put(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0])?;
    w.end_msg(m)
}

/// A packet the kernel queued to us.
#[derive(Clone, Copy, Debug)]
pub struct QueuedPacket<'a> {
    pub queue: u16,
    pub id: u32,
    pub hw_protocol: u16,
    pub hook: u8,
    /// The layer-3 packet (possibly cut to the copy range, see `cap_len`).
    pub payload: &'a [u8],
    /// The attributes inside NFQA_CT.
    pub ct: Option<&'a [u8]>,
    pub ct_info: Option<u32>,
    /// Original length when the payload was truncated.
    pub cap_len: Option<u32>,
}

impl QueuedPacket<'_> {
    pub fn is_truncated(&self) -> bool {
        self.cap_len
            .is_some_and(|len| len as usize != self.payload.len())
    }
}

/// Decode an NFQNL_MSG_PACKET.
pub fn parse_packet<'a>(msg: &Message<'a>) -> Result<QueuedPacket<'a>> {
    if msg.header.subsys() != subsys::QUEUE || msg.header.nf_msg() != NFQNL_MSG_PACKET {
        return Err(Error::Malformed("not a queued packet"));
    }
    let (gen_msg, attrs) = msg.nfnl()?;
    let t: [Option<Attr>; NFQA_TABLE] = attrs.table()?;
    let hdr = t[usize::from(NFQA_PACKET_HDR)]
        .ok_or(Error::Missing("NFQA_PACKET_HDR"))?
        .payload;
    let hdr = hdr.get(..7).ok_or(Error::Truncated)?;
    Ok(QueuedPacket {
        queue: gen_msg.res_id,
        id: u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]),
        hw_protocol: u16::from_be_bytes([hdr[4], hdr[5]]),
        hook: hdr[6],
        payload: t[usize::from(NFQA_PAYLOAD)].map_or(&[][..], |a| a.payload),
        ct: t[usize::from(NFQA_CT)].map(|a| a.payload),
        ct_info: t[usize::from(NFQA_CT_INFO)].map(|a| a.be32()).transpose()?,
        cap_len: t[usize::from(NFQA_CAP_LEN)].map(|a| a.be32()).transpose()?,
    })
}

/// The helper's private data to write back with a verdict.
#[derive(Clone, Copy, Debug)]
pub struct HelpUpdate<'a> {
    /// Must be the conntrack's current helper, or the kernel rejects the update.
    pub helper_name: &'a str,
    pub info: &'a [u8],
}

/// What to send back for one packet.
#[derive(Clone, Copy, Debug)]
pub struct Verdict<'a> {
    pub queue: u16,
    pub id: u32,
    pub verdict: u32,
    pub help: Option<HelpUpdate<'a>>,
    /// An expectation attached to the verdict (the kernel does not report whether it
    /// was created; used where the master is not yet confirmed and ctnetlink cannot
    /// find it).
    pub expectation: Option<&'a Expectation>,
    /// A replacement layer-3 packet.
    pub payload: Option<&'a [u8]>,
    /// The replacement changed the TCP payload length and the kernel is to record the
    /// sequence adjustment. It does so only when the verdict carries NFQA_CT
    /// (`if (ct && diff)` in nfqnl_recv_verdict), so one is sent, empty if need be.
    pub seq_adjust: bool,
    /// Seconds the packet's conntrack is to live from now (CTA_TIMEOUT). Only for a
    /// confirmed conntrack: the kernel writes it as the absolute expiry, and on an
    /// unconfirmed one the confirmation adds the current time again.
    pub timeout: Option<u32>,
}

impl<'a> Verdict<'a> {
    /// A plain verdict: no private data, expectation or payload.
    pub fn plain(queue: u16, id: u32, verdict: u32) -> Verdict<'a> {
        Verdict {
            queue,
            id,
            verdict,
            help: None,
            expectation: None,
            payload: None,
            seq_adjust: false,
            timeout: None,
        }
    }

    /// Whether this verdict only passes the packet as it is (and so may be merged into
    /// a VERDICT_BATCH with its neighbours).
    pub fn is_plain_pass(&self) -> bool {
        self.verdict == PASS
            && self.help.is_none()
            && self.expectation.is_none()
            && self.payload.is_none()
            && !self.seq_adjust
            && self.timeout.is_none()
    }
}

/// Room a verdict needs besides its payload: netlink and nfgen headers, the verdict
/// header, NFQA_CT with the helper name and PRIVATE_DATA_MAX bytes of private data,
/// NFQA_EXP with master-less IPv6 tuple and mask, NAT section and expectfn name, and
/// the NFQA_PAYLOAD header. Generous: a unit test checks the real worst case fits.
pub const VERDICT_OVERHEAD_MAX: usize = 1024;

/// The queue and packet id of a queued-packet message, read as leniently as possible:
/// a message too damaged for [`parse_packet`] still gets a verdict when its id can be
/// found (a packet without one is held by the kernel until the queue goes away).
pub fn packet_ref(msg: &Message<'_>) -> Option<(u16, u32)> {
    if msg.header.subsys() != subsys::QUEUE || msg.header.nf_msg() != NFQNL_MSG_PACKET {
        return None;
    }
    let (gen_msg, attrs) = msg.nfnl().ok()?;
    // The last header counts, as in the attribute table `parse_packet` reads (and the
    // kernel's nla_parse), so both name the same packet; attributes past a damaged
    // one cannot be found.
    let mut id = None;
    for attr in attrs {
        let Ok(attr) = attr else {
            break;
        };
        if attr.kind == NFQA_PACKET_HDR {
            id = attr
                .payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
    }
    Some((gen_msg.res_id, id?))
}

/// Start a VERDICT or VERDICT_BATCH message of `queue` with its header: `verdict` for
/// packet `id` (for a batch: every waiting packet up to it).
fn begin_verdict(
    w: &mut Writer<'_>,
    msg: u8,
    seq: u32,
    queue: u16,
    verdict: u32,
    id: u32,
) -> Result<super::attr::Mark> {
    let m = w.begin_nfnl(
        nfnl_type(subsys::QUEUE, msg),
        NLM_F_REQUEST,
        seq,
        NfGenMsg {
            family: 0,
            version: NFNETLINK_V0,
            res_id: queue,
        },
    )?;
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&verdict.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    w.put(NFQA_VERDICT_HDR, &hdr)?;
    Ok(m)
}

/// Append an NFQNL_MSG_VERDICT (several may share one send).
pub fn write_verdict(w: &mut Writer<'_>, seq: u32, v: &Verdict<'_>) -> Result<()> {
    let m = begin_verdict(w, NFQNL_MSG_VERDICT, seq, v.queue, v.verdict, v.id)?;
    // The kernel looks at NFQA_EXP only after NFQA_CT parsed, so an expectation
    // without a private-data update still needs an (empty) NFQA_CT.
    if v.help.is_some() || v.expectation.is_some() || v.seq_adjust || v.timeout.is_some() {
        let ct = w.begin_nested(NFQA_CT)?;
        if let Some(secs) = v.timeout {
            w.put_be32(CTA_TIMEOUT, secs)?;
        }
        if let Some(help) = v.help {
            let h = w.begin_nested(CTA_HELP)?;
            w.put_str(CTA_HELP_NAME, help.helper_name)?;
            w.put(CTA_HELP_INFO, help.info)?;
            w.end_nested(h)?;
        }
        w.end_nested(ct)?;
    }
    if let Some(exp) = v.expectation {
        let e = w.begin_nested(NFQA_EXP)?;
        put_expectation(w, exp, None, None)?;
        w.end_nested(e)?;
    }
    if let Some(p) = v.payload {
        w.put(NFQA_PAYLOAD, p)?;
    }
    w.end_msg(m)
}

/// Append an NFQNL_MSG_VERDICT_BATCH: `verdict` for every packet of `queue` still
/// waiting whose id is `max_id` or earlier. Only for a run of packets that all get that
/// plain verdict: the kernel takes every waiting packet up to `max_id`, so any packet
/// before it that needs more (private data, a rewrite) must have had its own verdict
/// earlier in the same send.
pub fn write_verdict_batch(
    w: &mut Writer<'_>,
    seq: u32,
    queue: u16,
    max_id: u32,
    verdict: u32,
) -> Result<()> {
    let m = begin_verdict(w, NFQNL_MSG_VERDICT_BATCH, seq, queue, verdict, max_id)?;
    w.end_msg(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::{Header, Messages, NLMSG_HDRLEN};

    /// A PACKET message as the kernel would build it.
    fn packet_msg(buf: &mut [u8], with_ct: bool) -> usize {
        let mut w = Writer::new(buf);
        let m = w
            .begin_nfnl(
                nfnl_type(subsys::QUEUE, NFQNL_MSG_PACKET),
                0,
                0,
                NfGenMsg {
                    family: 2,
                    version: 0,
                    res_id: 7,
                },
            )
            .unwrap();
        w.put(NFQA_PACKET_HDR, &[0, 0, 0, 42, 0x08, 0x00, 4])
            .unwrap();
        w.put(NFQA_PAYLOAD, &[0x45, 0, 0, 20]).unwrap();
        if with_ct {
            let ct = w.begin_nested(NFQA_CT).unwrap();
            w.put_be32(3, 8).unwrap();
            w.end_nested(ct).unwrap();
            w.put_be32(NFQA_CT_INFO, 3).unwrap();
        }
        w.end_msg(m).unwrap();
        w.len()
    }

    #[test]
    fn decodes_a_queued_packet() {
        let mut buf = [0u8; 256];
        let n = packet_msg(&mut buf, true);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let p = parse_packet(&msg).unwrap();
        assert_eq!(p.queue, 7);
        assert_eq!(p.id, 42);
        assert_eq!(p.hw_protocol, 0x0800);
        assert_eq!(p.hook, 4);
        assert_eq!(p.payload, &[0x45, 0, 0, 20]);
        assert_eq!(p.ct.unwrap().len(), 8);
        assert_eq!(p.ct_info, Some(3));
        assert!(!p.is_truncated());
    }

    #[test]
    fn packet_without_header_is_refused() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        let m = w
            .begin_nfnl(
                nfnl_type(subsys::QUEUE, NFQNL_MSG_PACKET),
                0,
                0,
                NfGenMsg {
                    family: 2,
                    version: 0,
                    res_id: 0,
                },
            )
            .unwrap();
        w.put(NFQA_PAYLOAD, &[1]).unwrap();
        w.end_msg(m).unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        assert_eq!(
            parse_packet(&msg).unwrap_err(),
            Error::Missing("NFQA_PACKET_HDR")
        );
    }

    #[test]
    fn verdict_carries_help_info_and_expectation() {
        use crate::model::IPPROTO_UDP;
        let exp = Expectation {
            class: 0,
            proto: IPPROTO_UDP,
            src: "198.51.100.2".parse().unwrap(),
            src_port: None,
            dst: "192.0.2.2".parse().unwrap(),
            dst_port: 50000,
            flags: 0,
            nat: None,
            helper: None,
        };
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        write_verdict(
            &mut w,
            1,
            &Verdict {
                queue: 7,
                id: 42,
                verdict: NF_ACCEPT,
                help: Some(HelpUpdate {
                    helper_name: "ftp",
                    info: &[9; 20],
                }),
                expectation: Some(&exp),
                payload: None,
                seq_adjust: false,
                timeout: Some(3600),
            },
        )
        .unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        assert_eq!(msg.header.kind, 0x0301);
        let (g, attrs) = msg.nfnl().unwrap();
        assert_eq!(g.res_id, 7);
        let t: [Option<Attr>; NFQA_TABLE] = attrs.table().unwrap();
        assert_eq!(
            t[usize::from(NFQA_VERDICT_HDR)].unwrap().payload,
            &[0, 0, 0, 1, 0, 0, 0, 42]
        );
        let ct: [Option<Attr>; 8] = t[usize::from(NFQA_CT)].unwrap().nested().table().unwrap();
        assert_eq!(ct[usize::from(CTA_TIMEOUT)].unwrap().be32().unwrap(), 3600);
        let help: [Option<Attr>; 3] = ct[5].unwrap().nested().table().unwrap();
        assert_eq!(help[1].unwrap().str().unwrap(), "ftp");
        assert_eq!(help[2].unwrap().payload, &[9; 20]);
        let e: [Option<Attr>; 4] = t[usize::from(NFQA_EXP)].unwrap().nested().table().unwrap();
        assert!(e[1].is_none(), "no master tuple on a verdict");
        assert!(e[2].is_some() && e[3].is_some());
    }

    #[test]
    fn expectation_alone_comes_with_an_empty_conntrack_attribute() {
        let exp = Expectation {
            class: 0,
            proto: 17,
            src: "198.51.100.2".parse().unwrap(),
            src_port: None,
            dst: "192.0.2.2".parse().unwrap(),
            dst_port: 50000,
            flags: 0,
            nat: None,
            helper: None,
        };
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        let v = Verdict {
            queue: 0,
            id: 1,
            verdict: NF_ACCEPT,
            help: None,
            expectation: Some(&exp),
            payload: None,
            seq_adjust: false,
            timeout: None,
        };
        write_verdict(&mut w, 1, &v).unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        let t: [Option<Attr>; NFQA_TABLE] = msg.nfnl().unwrap().1.table().unwrap();
        assert_eq!(t[usize::from(NFQA_CT)].unwrap().payload, &[] as &[u8]);
        assert!(t[usize::from(NFQA_EXP)].is_some());

        // A plain accept carries neither.
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        write_verdict(
            &mut w,
            2,
            &Verdict {
                expectation: None,
                ..v
            },
        )
        .unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        let t: [Option<Attr>; NFQA_TABLE] = msg.nfnl().unwrap().1.table().unwrap();
        assert!(t[usize::from(NFQA_CT)].is_none() && t[usize::from(NFQA_EXP)].is_none());
    }

    #[test]
    fn a_length_changing_rewrite_carries_a_conntrack_attribute() {
        // Without NFQA_CT the kernel skips the sequence adjustment and the TCP stream
        // desynchronises after a NAT rewrite that changed the length.
        let packet = [0x45u8; 60];
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf);
        let v = Verdict {
            payload: Some(&packet),
            seq_adjust: true,
            ..Verdict::plain(3, 9, NF_ACCEPT)
        };
        write_verdict(&mut w, 1, &v).unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        let t: [Option<Attr>; NFQA_TABLE] = msg.nfnl().unwrap().1.table().unwrap();
        assert_eq!(t[usize::from(NFQA_CT)].unwrap().payload, &[] as &[u8]);
        assert_eq!(t[usize::from(NFQA_PAYLOAD)].unwrap().payload, &packet[..]);
        assert!(t[usize::from(NFQA_EXP)].is_none());
    }

    #[test]
    fn the_largest_verdict_fits_its_overhead_bound() {
        use crate::model::{Direction, ExpectNat};
        let v6 = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let exp = Expectation {
            class: 3,
            proto: 6,
            src: v6,
            src_port: Some(65535),
            dst: v6,
            dst_port: 65535,
            flags: 3,
            nat: Some(ExpectNat {
                dir: Direction::Reply,
                saved_addr: v6,
                saved_port: 65535,
            }),
            helper: None,
        };
        let info = [0xffu8; crate::helpers::PRIVATE_DATA_MAX];
        let packet = [0u8; 100];
        let mut buf = [0u8; 4096];
        let mut w = Writer::new(&mut buf);
        let v = Verdict {
            help: Some(HelpUpdate {
                helper_name: "fifteen-chars-x",
                info: &info,
            }),
            expectation: Some(&exp),
            payload: Some(&packet),
            seq_adjust: true,
            ..Verdict::plain(u16::MAX, u32::MAX, NF_ACCEPT)
        };
        write_verdict(&mut w, u32::MAX, &v).unwrap();
        assert!(
            w.len() - packet.len() <= VERDICT_OVERHEAD_MAX,
            "{}",
            w.len()
        );
    }

    #[test]
    fn packet_ref_finds_the_id_of_a_damaged_message() {
        let mut buf = [0u8; 256];
        let n = packet_msg(&mut buf, true);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = parse_packet(&msg).unwrap();
        assert_eq!(packet_ref(&msg), Some((pkt.queue, pkt.id)));
        // A packet header too short for parse_packet still names the id.
        let n = packet_with_headers(&mut buf, &[&[0, 0, 1, 2]]);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        assert!(parse_packet(&msg).is_err());
        assert_eq!(packet_ref(&msg), Some((4, 0x0102)));
        // Two headers (fuzzing found it): the last one counts, for both readers.
        let n = packet_with_headers(&mut buf, &[&[0xff; 7], &[0, 0x10, 0xff, 0xff, 8, 0, 1]]);
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        let pkt = parse_packet(&msg).unwrap();
        assert_eq!(pkt.id, 0x0010_ffff);
        assert_eq!(packet_ref(&msg), Some((4, pkt.id)));
        // Not a packet: no id.
        let mut w = Writer::new(&mut buf);
        write_unbind(&mut w, 1, 4).unwrap();
        let n = w.len();
        let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
        assert_eq!(packet_ref(&msg), None);
    }

    fn nfl() -> u16 {
        nfnl_type(subsys::QUEUE, NFQNL_MSG_PACKET)
    }

    /// A PACKET message of queue 4 with these NFQA_PACKET_HDR attributes only.
    fn packet_with_headers(buf: &mut [u8], headers: &[&[u8]]) -> usize {
        let mut w = Writer::new(buf);
        let m = w
            .begin_nfnl(
                nfl(),
                0,
                0,
                NfGenMsg {
                    family: 2,
                    version: 0,
                    res_id: 4,
                },
            )
            .unwrap();
        for h in headers {
            w.put(NFQA_PACKET_HDR, h).unwrap();
        }
        w.end_msg(m).unwrap();
        w.len()
    }

    #[test]
    fn bind_message_sets_conntrack_flag() {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        write_bind(
            &mut w,
            1,
            &QueueConfig {
                queue: 2,
                max_len: 1024,
                fail_open: false,
                gso: false,
            },
        )
        .unwrap();
        let bytes = w.as_slice();
        let h = Header::parse(bytes).unwrap();
        assert_eq!(h.len as usize, bytes.len());
        assert!(bytes.len() > NLMSG_HDRLEN);
        let msg = Messages::new(bytes).next().unwrap().unwrap();
        let (g, attrs) = msg.nfnl().unwrap();
        assert_eq!(g.res_id, 2);
        let t: [Option<Attr>; 6] = attrs.table().unwrap();
        assert_eq!(t[5].unwrap().be32().unwrap(), NFQA_CFG_F_CONNTRACK);
        assert_eq!(
            t[4].unwrap().be32().unwrap(),
            NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO,
            "every flag we choose is in the mask, so a rebind clears what is off"
        );
        assert_eq!(t[2].unwrap().payload, &[0, 0, 0xff, 0xff, 2]);
    }

    #[test]
    fn params_message_has_no_command() {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        let cfg = QueueConfig {
            queue: 3,
            max_len: 4096,
            fail_open: true,
            gso: true,
        };
        write_params(&mut w, 1, &cfg).unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        let t: [Option<Attr>; 6] = msg.nfnl().unwrap().1.table().unwrap();
        assert!(t[usize::from(NFQA_CFG_CMD)].is_none());
        assert_eq!(t[3].unwrap().be32().unwrap(), 4096);
        assert_eq!(
            t[5].unwrap().be32().unwrap(),
            NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO
        );
    }

    #[test]
    fn verdict_batch_names_the_queue_the_last_id_and_the_verdict() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        write_verdict_batch(&mut w, 0, 48001, 0x0102_0304, NF_ACCEPT).unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        assert_eq!(msg.header.subsys(), subsys::QUEUE);
        assert_eq!(msg.header.nf_msg(), NFQNL_MSG_VERDICT_BATCH);
        let (g, attrs) = msg.nfnl().unwrap();
        assert_eq!(g.res_id, 48001);
        let t: [Option<Attr>; 3] = attrs.table().unwrap();
        assert_eq!(
            t[usize::from(NFQA_VERDICT_HDR)].unwrap().payload,
            &[0, 0, 0, 1, 1, 2, 3, 4]
        );
    }

    #[test]
    fn only_a_bare_pass_is_plain() {
        assert!(Verdict::plain(1, 2, PASS).is_plain_pass());
        assert!(!Verdict::plain(1, 2, NF_ACCEPT).is_plain_pass());
        assert!(!Verdict::plain(1, 2, NF_DROP).is_plain_pass());
        let mut v = Verdict::plain(1, 2, PASS);
        v.seq_adjust = true;
        assert!(!v.is_plain_pass());
        let mut v = Verdict::plain(1, 2, PASS);
        v.payload = Some(&[0x45]);
        assert!(!v.is_plain_pass());
        let mut v = Verdict::plain(1, 2, PASS);
        v.timeout = Some(30);
        assert!(!v.is_plain_pass());
        let mut v = Verdict::plain(1, 2, PASS);
        v.help = Some(HelpUpdate {
            helper_name: "ftp",
            info: &[],
        });
        assert!(!v.is_plain_pass());
    }
}
