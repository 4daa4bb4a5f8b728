//! ctnetlink attributes: conntrack tuples, the conntrack the queue hands us (NFQA_CT),
//! and expectations (for IPCTNL_MSG_EXP_NEW and for NFQA_EXP on a verdict).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::attr::{Attr, Attrs, Writer};
use super::msg::{
    NFNETLINK_V0, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NfGenMsg,
};
use super::{Error, Result, nfnl_type, subsys};
use crate::model::{Conntrack, Direction, ExpectNat, Expectation, Family, SeqAdj, Tuple};

// enum ctattr_type
pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
pub const CTA_STATUS: u16 = 3;
pub const CTA_HELP: u16 = 5;
pub const CTA_TIMEOUT: u16 = 7;
pub const CTA_ID: u16 = 12;
pub const CTA_SEQ_ADJ_ORIG: u16 = 15;
pub const CTA_SEQ_ADJ_REPLY: u16 = 16;
pub const CTA_ZONE: u16 = 18;

// enum ctattr_seqadj
pub const CTA_SEQADJ_CORRECTION_POS: u16 = 1;
pub const CTA_SEQADJ_OFFSET_BEFORE: u16 = 2;
pub const CTA_SEQADJ_OFFSET_AFTER: u16 = 3;

// enum cntl_msg_types
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
pub const IPCTNL_MSG_CT_GET: u8 = 1;
const CTA_TABLE: usize = 26;

// enum ctattr_tuple / ctattr_ip / ctattr_l4proto
pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;
pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;
pub const CTA_PROTO_NUM: u16 = 1;
pub const CTA_PROTO_SRC_PORT: u16 = 2;
pub const CTA_PROTO_DST_PORT: u16 = 3;

// enum ctattr_help
pub const CTA_HELP_NAME: u16 = 1;
pub const CTA_HELP_INFO: u16 = 2;

// enum ctattr_expect
pub const CTA_EXPECT_MASTER: u16 = 1;
pub const CTA_EXPECT_TUPLE: u16 = 2;
pub const CTA_EXPECT_MASK: u16 = 3;
pub const CTA_EXPECT_HELP_NAME: u16 = 6;
pub const CTA_EXPECT_ZONE: u16 = 7;
pub const CTA_EXPECT_FLAGS: u16 = 8;
pub const CTA_EXPECT_CLASS: u16 = 9;
pub const CTA_EXPECT_NAT: u16 = 10;
pub const CTA_EXPECT_FN: u16 = 11;

// enum ctattr_expect_nat
pub const CTA_EXPECT_NAT_DIR: u16 = 1;
pub const CTA_EXPECT_NAT_TUPLE: u16 = 2;

/// The expectation function (nf_ct_helper_expectfn) that maps an expected connection
/// like its master: registered by the kernel's nf_nat core.
pub const NAT_FOLLOW_MASTER: &str = "nat-follow-master";

// enum cntl_msg_types / ctnl_exp_msg_types
pub const IPCTNL_MSG_EXP_NEW: u8 = 0;
pub const IPCTNL_MSG_EXP_GET: u8 = 1;
pub const IPCTNL_MSG_EXP_DELETE: u8 = 2;
pub const CTA_EXPECT_TIMEOUT: u16 = 4;

/// A conntrack as NFQA_CT describes it, plus the helper fields we need.
#[derive(Clone, Copy, Debug)]
pub struct CtAttrs<'a> {
    pub conntrack: Conntrack,
    pub helper_name: Option<&'a str>,
    pub help_info: Option<&'a [u8]>,
}

fn parse_addr(attr: Attr<'_>) -> Result<IpAddr> {
    match attr.payload.len() {
        4 => {
            let b: [u8; 4] = attr.payload.try_into().map_err(|_| Error::Truncated)?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        16 => {
            let b: [u8; 16] = attr.payload.try_into().map_err(|_| Error::Truncated)?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => Err(Error::Malformed("address length")),
    }
}

/// Parse a nested CTA_TUPLE_* attribute.
pub fn parse_tuple(attr: Attr<'_>) -> Result<Tuple> {
    let t: [Option<Attr>; 4] = attr.nested().table()?;
    let ip: [Option<Attr>; 5] = t[usize::from(CTA_TUPLE_IP)]
        .ok_or(Error::Missing("CTA_TUPLE_IP"))?
        .nested()
        .table()?;
    let (src, dst) = match (
        ip[usize::from(CTA_IP_V4_SRC)],
        ip[usize::from(CTA_IP_V4_DST)],
        ip[usize::from(CTA_IP_V6_SRC)],
        ip[usize::from(CTA_IP_V6_DST)],
    ) {
        (Some(s), Some(d), _, _) | (_, _, Some(s), Some(d)) => (parse_addr(s)?, parse_addr(d)?),
        _ => return Err(Error::Missing("tuple addresses")),
    };
    if Family::of(&src) != Family::of(&dst) {
        return Err(Error::Malformed("tuple mixes address families"));
    }
    let proto: [Option<Attr>; 4] = t[usize::from(CTA_TUPLE_PROTO)]
        .ok_or(Error::Missing("CTA_TUPLE_PROTO"))?
        .nested()
        .table()?;
    let num = proto[usize::from(CTA_PROTO_NUM)]
        .ok_or(Error::Missing("CTA_PROTO_NUM"))?
        .u8()?;
    let port = |kind: u16| -> Result<u16> {
        match proto[usize::from(kind)] {
            Some(a) => a.be16(),
            None => Ok(0),
        }
    };
    Ok(Tuple {
        src,
        dst,
        proto: num,
        src_port: port(CTA_PROTO_SRC_PORT)?,
        dst_port: port(CTA_PROTO_DST_PORT)?,
    })
}

/// Parse the attributes inside NFQA_CT.
pub fn parse_conntrack(nested: &[u8]) -> Result<CtAttrs<'_>> {
    let t: [Option<Attr>; CTA_TABLE] = Attrs::new(nested).table()?;
    let get = |kind: u16| t[usize::from(kind)];
    let orig = parse_tuple(get(CTA_TUPLE_ORIG).ok_or(Error::Missing("CTA_TUPLE_ORIG"))?)?;
    let reply = parse_tuple(get(CTA_TUPLE_REPLY).ok_or(Error::Missing("CTA_TUPLE_REPLY"))?)?;
    let status = get(CTA_STATUS).map(|a| a.be32()).transpose()?.unwrap_or(0);
    let id = get(CTA_ID).map(|a| a.be32()).transpose()?;
    let zone = get(CTA_ZONE).map(|a| a.be16()).transpose()?;
    let (mut helper_name, mut help_info) = (None, None);
    if let Some(help) = get(CTA_HELP) {
        let h: [Option<Attr>; 3] = help.nested().table()?;
        helper_name = h[usize::from(CTA_HELP_NAME)].map(|a| a.str()).transpose()?;
        help_info = h[usize::from(CTA_HELP_INFO)].map(|a| a.payload);
    }
    Ok(CtAttrs {
        conntrack: Conntrack {
            orig,
            reply,
            status,
            id,
            zone,
        },
        helper_name,
        help_info,
    })
}

fn put_addr(w: &mut Writer<'_>, kind: u16, addr: &IpAddr) -> Result<()> {
    match addr {
        IpAddr::V4(a) => w.put(kind, &a.octets()),
        IpAddr::V6(a) => w.put(kind, &a.octets()),
    }
}

/// Write a nested tuple attribute of type `kind`.
pub fn put_tuple(w: &mut Writer<'_>, kind: u16, t: &Tuple) -> Result<()> {
    let outer = w.begin_nested(kind)?;
    let ip = w.begin_nested(CTA_TUPLE_IP)?;
    let (src_kind, dst_kind) = match t.src {
        IpAddr::V4(_) => (CTA_IP_V4_SRC, CTA_IP_V4_DST),
        IpAddr::V6(_) => (CTA_IP_V6_SRC, CTA_IP_V6_DST),
    };
    put_addr(w, src_kind, &t.src)?;
    put_addr(w, dst_kind, &t.dst)?;
    w.end_nested(ip)?;
    let proto = w.begin_nested(CTA_TUPLE_PROTO)?;
    w.put_u8(CTA_PROTO_NUM, t.proto)?;
    w.put_be16(CTA_PROTO_SRC_PORT, t.src_port)?;
    w.put_be16(CTA_PROTO_DST_PORT, t.dst_port)?;
    w.end_nested(proto)?;
    w.end_nested(outer)
}

fn all_ones_like(addr: &IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from([0xff; 4])),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from([0xff; 16])),
    }
}

/// The mask the kernel applies when matching: only its source part counts. An exact
/// source address unless the expectation takes any, and an exact source port unless it
/// leaves it open.
pub fn expectation_mask(exp: &Expectation) -> Tuple {
    Tuple {
        src: if exp.any_source() {
            exp.src
        } else {
            all_ones_like(&exp.src)
        },
        dst: all_ones_like(&exp.dst),
        proto: exp.proto,
        src_port: if exp.src_port.is_some() { 0xffff } else { 0 },
        dst_port: 0xffff,
    }
}

/// The attributes of an expectation. `master` is needed for IPCTNL_MSG_EXP_NEW (the
/// kernel looks the master up by it); on a verdict the master is the queued packet's
/// conntrack and must be omitted.
pub fn put_expectation(
    w: &mut Writer<'_>,
    exp: &Expectation,
    master: Option<&Tuple>,
    zone: Option<u16>,
) -> Result<()> {
    if let Some(m) = master {
        put_tuple(w, CTA_EXPECT_MASTER, m)?;
    }
    put_tuple(w, CTA_EXPECT_TUPLE, &exp.tuple())?;
    put_tuple(w, CTA_EXPECT_MASK, &expectation_mask(exp))?;
    if let Some(z) = zone {
        w.put_be16(CTA_EXPECT_ZONE, z)?;
    }
    if exp.flags != 0 {
        w.put_be32(CTA_EXPECT_FLAGS, exp.flags)?;
    }
    if exp.class != 0 {
        w.put_be32(CTA_EXPECT_CLASS, exp.class)?;
    }
    if let Some(name) = exp.helper {
        w.put_str(CTA_EXPECT_HELP_NAME, name)?;
    }
    if let Some(nat) = &exp.nat {
        put_expect_nat(w, exp, nat)?;
        w.put_str(CTA_EXPECT_FN, NAT_FOLLOW_MASTER)?;
    }
    Ok(())
}

/// CTA_EXPECT_NAT. The kernel parses the tuple with the full tuple parser (both
/// addresses, protocol and both ports must be present) but keeps only its source part
/// as saved_addr / saved_proto.
fn put_expect_nat(w: &mut Writer<'_>, exp: &Expectation, nat: &ExpectNat) -> Result<()> {
    let n = w.begin_nested(CTA_EXPECT_NAT)?;
    w.put_be32(CTA_EXPECT_NAT_DIR, nat.dir as u32)?;
    let saved = Tuple {
        src: nat.saved_addr,
        dst: exp.dst,
        proto: exp.proto,
        src_port: nat.saved_port,
        dst_port: exp.dst_port,
    };
    put_tuple(w, CTA_EXPECT_NAT_TUPLE, &saved)?;
    w.end_nested(n)
}

/// IPCTNL_MSG_EXP_NEW with an ACK request, so the kernel reports whether the
/// expectation was created. The kernel first looks an existing expectation up by tuple:
/// if there is one, a request without `exclusive` (NLM_F_EXCL) refreshes it and reports
/// success — right when a client repeats PASV, wrong when the expectation belongs to
/// another master (another inside host behind the same NAT announced the same port);
/// an exclusive one is refused with EEXIST instead.
///
/// `timeout_secs` is what an existing expectation is refreshed to: the kernel changes an
/// existing expectation's timer only when CTA_EXPECT_TIMEOUT is present
/// (ctnetlink_change_expect), and ignores the attribute when it creates one (the
/// timeout then comes from the helper's policy for the expectation's class).
pub fn write_exp_new(
    w: &mut Writer<'_>,
    seq: u32,
    exp: &Expectation,
    master: &Tuple,
    zone: Option<u16>,
    exclusive: bool,
    timeout_secs: u32,
) -> Result<()> {
    let family = Family::of(&master.src).af();
    let m = w.begin_nfnl(
        nfnl_type(subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_NEW),
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK | if exclusive { NLM_F_EXCL } else { 0 },
        seq,
        NfGenMsg {
            family,
            version: NFNETLINK_V0,
            res_id: 0,
        },
    )?;
    put_expectation(w, exp, Some(master), zone)?;
    w.put_be32(CTA_EXPECT_TIMEOUT, timeout_secs)?;
    w.end_msg(m)
}

/// IPCTNL_MSG_EXP_DELETE of the pending expectation with tuple `t` ([`Expectation::tuple`];
/// the kernel finds it by tuple and zone; ctnetlink has no "delete by master").
pub fn write_exp_delete(w: &mut Writer<'_>, seq: u32, t: &Tuple, zone: Option<u16>) -> Result<()> {
    exp_by_tuple(w, seq, IPCTNL_MSG_EXP_DELETE, t, zone)
}

/// IPCTNL_MSG_EXP_GET for the expectation with tuple `t`.
pub fn write_exp_get(w: &mut Writer<'_>, seq: u32, t: &Tuple, zone: Option<u16>) -> Result<()> {
    exp_by_tuple(w, seq, IPCTNL_MSG_EXP_GET, t, zone)
}

/// An expectation request (GET, DELETE) that names the expectation by its tuple.
fn exp_by_tuple(w: &mut Writer<'_>, seq: u32, msg: u8, t: &Tuple, zone: Option<u16>) -> Result<()> {
    let m = w.begin_nfnl(
        nfnl_type(subsys::CTNETLINK_EXP, msg),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NfGenMsg {
            family: Family::of(&t.src).af(),
            version: NFNETLINK_V0,
            res_id: 0,
        },
    )?;
    put_tuple(w, CTA_EXPECT_TUPLE, t)?;
    if let Some(z) = zone {
        w.put_be16(CTA_EXPECT_ZONE, z)?;
    }
    w.end_msg(m)
}

/// IPCTNL_MSG_EXP_GET with NLM_F_DUMP and CTA_EXPECT_MASTER: the pending expectations of
/// the master whose original tuple is `master` (ctnetlink_dump_exp_ct), ended by
/// NLMSG_DONE.
pub fn write_exp_dump_of(
    w: &mut Writer<'_>,
    seq: u32,
    master: &Tuple,
    zone: Option<u16>,
) -> Result<()> {
    let m = w.begin_nfnl(
        nfnl_type(subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_GET),
        NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
        seq,
        NfGenMsg {
            family: Family::of(&master.src).af(),
            version: NFNETLINK_V0,
            res_id: 0,
        },
    )?;
    put_tuple(w, CTA_EXPECT_MASTER, master)?;
    if let Some(z) = zone {
        w.put_be16(CTA_EXPECT_ZONE, z)?;
    }
    w.end_msg(m)
}

/// An expectation message's tuple and, when it has a NAT section, the real port it
/// translates to (exp->saved_proto, dumped as the NAT tuple's source port).
pub fn parse_exp_tuple_nat(attrs: super::attr::Attrs<'_>) -> Result<(Tuple, Option<u16>)> {
    let t: [Option<Attr>; 12] = attrs.table()?;
    let tuple =
        parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].ok_or(Error::Missing("CTA_EXPECT_TUPLE"))?)?;
    let saved_port = match t[usize::from(CTA_EXPECT_NAT)] {
        Some(nat) => {
            let n: [Option<Attr>; 3] = nat.nested().table()?;
            let saved = n[usize::from(CTA_EXPECT_NAT_TUPLE)]
                .ok_or(Error::Missing("CTA_EXPECT_NAT_TUPLE"))?;
            Some(parse_tuple(saved)?.src_port)
        }
        None => None,
    };
    Ok((tuple, saved_port))
}

/// The master's original tuple in an expectation message.
pub fn parse_exp_master(attrs: super::attr::Attrs<'_>) -> Result<Tuple> {
    let t: [Option<Attr>; 12] = attrs.table()?;
    parse_tuple(t[usize::from(CTA_EXPECT_MASTER)].ok_or(Error::Missing("CTA_EXPECT_MASTER"))?)
}

fn seq_adj_kind(dir: Direction) -> u16 {
    match dir {
        Direction::Original => CTA_SEQ_ADJ_ORIG,
        Direction::Reply => CTA_SEQ_ADJ_REPLY,
    }
}

/// A conntrack request addressed by its original tuple (and zone).
fn begin_ct_request(
    w: &mut Writer<'_>,
    seq: u32,
    msg: u8,
    orig: &Tuple,
    zone: Option<u16>,
) -> Result<super::attr::Mark> {
    let m = w.begin_nfnl(
        nfnl_type(subsys::CTNETLINK, msg),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NfGenMsg {
            family: Family::of(&orig.src).af(),
            version: NFNETLINK_V0,
            res_id: 0,
        },
    )?;
    put_tuple(w, CTA_TUPLE_ORIG, orig)?;
    if let Some(z) = zone {
        w.put_be16(CTA_ZONE, z)?;
    }
    Ok(m)
}

/// IPCTNL_MSG_CT_GET for one conntrack (the answer is an IPCTNL_MSG_CT_NEW message).
pub fn write_ct_get(w: &mut Writer<'_>, seq: u32, orig: &Tuple, zone: Option<u16>) -> Result<()> {
    let m = begin_ct_request(w, seq, IPCTNL_MSG_CT_GET, orig, zone)?;
    w.end_msg(m)
}

/// The sequence adjustment of `dir` in a conntrack message's attributes; the kernel
/// leaves it out while the conntrack has none, which is an adjustment of zero.
pub fn parse_seq_adj(attrs: super::attr::Attrs<'_>, dir: Direction) -> Result<SeqAdj> {
    let t: [Option<Attr>; CTA_TABLE] = attrs.table()?;
    let Some(adj) = t[usize::from(seq_adj_kind(dir))] else {
        return Ok(SeqAdj::default());
    };
    let a: [Option<Attr>; 4] = adj.nested().table()?;
    let get = |kind: u16| -> Result<u32> {
        a[usize::from(kind)]
            .ok_or(Error::Missing("CTA_SEQADJ_*"))?
            .be32()
    };
    Ok(SeqAdj {
        correction_pos: get(CTA_SEQADJ_CORRECTION_POS)?,
        offset_before: get(CTA_SEQADJ_OFFSET_BEFORE)? as i32,
        offset_after: get(CTA_SEQADJ_OFFSET_AFTER)? as i32,
    })
}

/// IPCTNL_MSG_CT_NEW updating an existing conntrack: `dir`'s sequence adjustment and,
/// if given, the helper's private data (helper name, info). Used where the queue's
/// verdict would set the adjustment wrongly (IPv6: README, section "NAT").
pub fn write_ct_update(
    w: &mut Writer<'_>,
    seq: u32,
    orig: &Tuple,
    zone: Option<u16>,
    dir: Direction,
    adj: &SeqAdj,
    help: Option<(&str, &[u8])>,
) -> Result<()> {
    let m = begin_ct_request(w, seq, IPCTNL_MSG_CT_NEW, orig, zone)?;
    let n = w.begin_nested(seq_adj_kind(dir))?;
    w.put_be32(CTA_SEQADJ_CORRECTION_POS, adj.correction_pos)?;
    w.put_be32(CTA_SEQADJ_OFFSET_BEFORE, adj.offset_before as u32)?;
    w.put_be32(CTA_SEQADJ_OFFSET_AFTER, adj.offset_after as u32)?;
    w.end_nested(n)?;
    if let Some((name, info)) = help {
        let h = w.begin_nested(CTA_HELP)?;
        w.put_str(CTA_HELP_NAME, name)?;
        w.put(CTA_HELP_INFO, info)?;
        w.end_nested(h)?;
    }
    w.end_msg(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IPPROTO_TCP;

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    #[test]
    fn tuple_round_trips_v4_and_v6() {
        let tuples = [
            Tuple {
                src: v4([192, 0, 2, 2]),
                dst: v4([198, 51, 100, 2]),
                proto: IPPROTO_TCP,
                src_port: 40000,
                dst_port: 21,
            },
            Tuple {
                src: "2001:db8:1::2".parse().unwrap(),
                dst: "2001:db8:2::2".parse().unwrap(),
                proto: 17,
                src_port: 1,
                dst_port: 69,
            },
        ];
        for t in tuples {
            let mut buf = [0u8; 128];
            let mut w = Writer::new(&mut buf);
            put_tuple(&mut w, CTA_TUPLE_ORIG, &t).unwrap();
            let attr = Attrs::new(w.as_slice()).next().unwrap().unwrap();
            assert_eq!(attr.kind, CTA_TUPLE_ORIG);
            assert_eq!(parse_tuple(attr).unwrap(), t);
        }
    }

    #[test]
    fn parses_conntrack_with_help() {
        let orig = Tuple {
            src: v4([192, 0, 2, 2]),
            dst: v4([198, 51, 100, 2]),
            proto: IPPROTO_TCP,
            src_port: 40000,
            dst_port: 21,
        };
        let reply = orig.reversed();
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf);
        put_tuple(&mut w, CTA_TUPLE_ORIG, &orig).unwrap();
        put_tuple(&mut w, CTA_TUPLE_REPLY, &reply).unwrap();
        w.put_be32(CTA_STATUS, 0x18e).unwrap();
        w.put_be32(CTA_ID, 1234).unwrap();
        let h = w.begin_nested(CTA_HELP).unwrap();
        w.put_str(CTA_HELP_NAME, "ftp").unwrap();
        w.put(CTA_HELP_INFO, &[1, 2, 3]).unwrap();
        w.end_nested(h).unwrap();
        let ct = parse_conntrack(w.as_slice()).unwrap();
        assert_eq!(ct.conntrack.orig, orig);
        assert_eq!(ct.conntrack.reply, reply);
        assert_eq!(ct.conntrack.status, 0x18e);
        assert_eq!(ct.conntrack.id, Some(1234));
        assert_eq!(ct.helper_name, Some("ftp"));
        assert_eq!(ct.help_info, Some(&[1u8, 2, 3][..]));
    }

    #[test]
    fn conntrack_without_tuples_is_an_error() {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        w.put_be32(CTA_STATUS, 1).unwrap();
        assert_eq!(
            parse_conntrack(w.as_slice()).unwrap_err(),
            Error::Missing("CTA_TUPLE_ORIG")
        );
    }

    #[test]
    fn exp_new_message_carries_master_tuple_and_wildcard_mask() {
        let master = Tuple {
            src: v4([192, 0, 2, 2]),
            dst: v4([198, 51, 100, 2]),
            proto: IPPROTO_TCP,
            src_port: 40000,
            dst_port: 21,
        };
        let exp = Expectation {
            class: 0,
            proto: IPPROTO_TCP,
            src: v4([192, 0, 2, 2]),
            src_port: None,
            dst: v4([198, 51, 100, 2]),
            dst_port: 40011,
            flags: 0,
            nat: None,
            helper: None,
        };
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        write_exp_new(&mut w, 9, &exp, &master, None, false, 300).unwrap();
        let msg = super::super::msg::Messages::new(w.as_slice())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(msg.header.kind, 0x0200);
        assert_eq!(msg.header.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        let (g, attrs) = msg.nfnl().unwrap();
        assert_eq!(g.family, 2);
        let t: [Option<Attr>; 10] = attrs.table().unwrap();
        assert_eq!(parse_tuple(t[1].unwrap()).unwrap(), master);
        let tuple = parse_tuple(t[2].unwrap()).unwrap();
        assert_eq!(tuple.dst_port, 40011);
        assert_eq!(tuple.src_port, 0);
        let mask = parse_tuple(t[3].unwrap()).unwrap();
        assert_eq!(mask.src, v4([255; 4]));
        assert_eq!(mask.src_port, 0);
        assert!(t[8].is_none() && t[9].is_none());
        assert!(t[usize::from(CTA_EXPECT_HELP_NAME)].is_none(), "not helped");
        // Without the timeout a repeated announcement would "refresh" an existing
        // expectation without moving its timer.
        assert_eq!(
            t[usize::from(CTA_EXPECT_TIMEOUT)].unwrap().be32().unwrap(),
            300
        );
    }

    /// A registration's expectation names the helper its connection gets.
    #[test]
    fn a_helped_expectation_carries_the_helper_name() {
        let exp = Expectation {
            class: 0,
            proto: 17,
            src: v4([198, 51, 100, 2]),
            src_port: None,
            dst: v4([192, 0, 2, 2]),
            dst_port: 5062,
            flags: crate::model::expect_flags::PERMANENT,
            nat: None,
            helper: Some("sip"),
        };
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        put_expectation(&mut w, &exp, None, None).unwrap();
        let t: [Option<Attr>; 10] = Attrs::new(w.as_slice()).table().unwrap();
        assert_eq!(
            t[usize::from(CTA_EXPECT_HELP_NAME)].unwrap().str().unwrap(),
            "sip"
        );
        assert_eq!(t[usize::from(CTA_EXPECT_FLAGS)].unwrap().be32().unwrap(), 1);
    }

    /// sip_direct_media / sip_direct_signalling off: any source address, as the kernel
    /// spells it (address 0, mask 0), in both families; the destination stays exact.
    #[test]
    fn an_any_source_expectation_has_a_zero_source_and_mask() {
        for dst in [v4([192, 0, 2, 2]), "2001:db8:1::2".parse().unwrap()] {
            let exp = Expectation {
                class: 1,
                proto: 17,
                src: Expectation::any_source_like(dst),
                src_port: None,
                dst,
                dst_port: 40000,
                flags: 0,
                nat: None,
                helper: None,
            };
            assert!(exp.any_source());
            let mask = expectation_mask(&exp);
            assert!(mask.src.is_unspecified() && mask.src.is_ipv4() == dst.is_ipv4());
            assert_eq!(mask.dst, all_ones_like(&dst));
            assert_eq!(exp.tuple().src, mask.src);
            let mut buf = [0u8; 512];
            let mut w = Writer::new(&mut buf);
            put_expectation(&mut w, &exp, None, None).unwrap();
            let t: [Option<Attr>; 10] = Attrs::new(w.as_slice()).table().unwrap();
            let sent_mask = parse_tuple(t[usize::from(CTA_EXPECT_MASK)].unwrap()).unwrap();
            assert!(sent_mask.src.is_unspecified());
            assert_eq!(sent_mask.dst_port, 0xffff);
        }
    }

    #[test]
    fn exp_delete_names_the_expectation_by_tuple_and_zone() {
        let exp = Expectation {
            class: 0,
            proto: IPPROTO_TCP,
            src: v4([192, 0, 2, 2]),
            src_port: None,
            dst: v4([198, 51, 100, 2]),
            dst_port: 40011,
            flags: 0,
            nat: None,
            helper: None,
        };
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf);
        write_exp_delete(&mut w, 11, &exp.tuple(), Some(7)).unwrap();
        let msg = super::super::msg::Messages::new(w.as_slice())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(msg.header.kind, 0x0202);
        assert_eq!(msg.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let (g, attrs) = msg.nfnl().unwrap();
        assert_eq!(g.family, 2);
        let t: [Option<Attr>; 12] = attrs.table().unwrap();
        assert_eq!(
            parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].unwrap()).unwrap(),
            exp.tuple()
        );
        assert_eq!(t[usize::from(CTA_EXPECT_ZONE)].unwrap().payload, &[0, 7]);
        assert!(t[usize::from(CTA_EXPECT_MASTER)].is_none());
    }

    #[test]
    fn nat_expectation_carries_dir_saved_endpoint_and_follow_master() {
        let master = Tuple {
            src: v4([192, 0, 2, 2]),
            dst: v4([198, 51, 100, 2]),
            proto: IPPROTO_TCP,
            src_port: 40000,
            dst_port: 21,
        };
        let exp = Expectation {
            class: 0,
            proto: IPPROTO_TCP,
            src: v4([198, 51, 100, 2]),
            src_port: None,
            dst: v4([203, 0, 113, 1]),
            dst_port: 40001,
            flags: 0,
            nat: Some(ExpectNat {
                dir: crate::model::Direction::Reply,
                saved_addr: v4([192, 0, 2, 2]),
                saved_port: 40000,
            }),
            helper: None,
        };
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        write_exp_new(&mut w, 9, &exp, &master, None, true, 300).unwrap();
        let msg = super::super::msg::Messages::new(w.as_slice())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            msg.header.flags,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK | NLM_F_EXCL,
            "exclusive when asked"
        );
        let (_, attrs) = msg.nfnl().unwrap();
        let t: [Option<Attr>; 12] = attrs.table().unwrap();
        let tuple = parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].unwrap()).unwrap();
        assert_eq!((tuple.dst, tuple.dst_port), (v4([203, 0, 113, 1]), 40001));
        let nat: [Option<Attr>; 3] = t[usize::from(CTA_EXPECT_NAT)]
            .unwrap()
            .nested()
            .table()
            .unwrap();
        assert_eq!(
            nat[usize::from(CTA_EXPECT_NAT_DIR)]
                .unwrap()
                .be32()
                .unwrap(),
            1
        );
        let saved = parse_tuple(nat[usize::from(CTA_EXPECT_NAT_TUPLE)].unwrap()).unwrap();
        // The kernel keeps the source part; the rest must be present for its parser.
        assert_eq!((saved.src, saved.src_port), (v4([192, 0, 2, 2]), 40000));
        assert_eq!(saved.proto, IPPROTO_TCP);
        let func = t[usize::from(CTA_EXPECT_FN)].unwrap();
        assert_eq!(func.payload, b"nat-follow-master\0");
        assert_eq!(func.str().unwrap(), NAT_FOLLOW_MASTER);
        // The kernel's answer to a GET has the same layout: its master can be read.
        assert_eq!(parse_exp_master(attrs).unwrap(), master);
        let mut w = Writer::new(&mut buf);
        write_exp_get(&mut w, 10, &exp.tuple(), None).unwrap();
        let msg = super::super::msg::Messages::new(w.as_slice())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(msg.header.kind, 0x0201);
        let (_, attrs) = msg.nfnl().unwrap();
        let t: [Option<Attr>; 12] = attrs.table().unwrap();
        assert_eq!(
            parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].unwrap()).unwrap(),
            exp.tuple()
        );
        assert!(parse_exp_master(attrs).is_err());
    }

    #[test]
    fn ct_update_round_trips_the_sequence_adjustment() {
        let orig = Tuple {
            src: "2001:db8:1::2".parse().unwrap(),
            dst: "2001:db8:2::2".parse().unwrap(),
            proto: IPPROTO_TCP,
            src_port: 40000,
            dst_port: 21,
        };
        let adj = SeqAdj {
            correction_pos: 0xfffe_0001,
            offset_before: -2,
            offset_after: 5,
        };
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        write_ct_update(
            &mut w,
            4,
            &orig,
            Some(3),
            Direction::Reply,
            &adj,
            Some(("ftp", &[1, 2])),
        )
        .unwrap();
        let msg = super::super::msg::Messages::new(w.as_slice())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(msg.header.kind, 0x0100);
        assert_eq!(
            msg.header.flags,
            NLM_F_REQUEST | NLM_F_ACK,
            "an update, never a create"
        );
        let (g, attrs) = msg.nfnl().unwrap();
        assert_eq!(g.family, 10);
        assert_eq!(parse_seq_adj(attrs, Direction::Reply).unwrap(), adj);
        assert_eq!(
            parse_seq_adj(attrs, Direction::Original).unwrap(),
            SeqAdj::default()
        );
        let t: [Option<Attr>; CTA_TABLE] = attrs.table().unwrap();
        assert_eq!(
            parse_tuple(t[usize::from(CTA_TUPLE_ORIG)].unwrap()).unwrap(),
            orig
        );
        assert_eq!(t[usize::from(CTA_ZONE)].unwrap().be16().unwrap(), 3);
        let h: [Option<Attr>; 3] = t[usize::from(CTA_HELP)].unwrap().nested().table().unwrap();
        assert_eq!(h[usize::from(CTA_HELP_INFO)].unwrap().payload, &[1, 2]);

        let mut w = Writer::new(&mut buf);
        write_ct_get(&mut w, 5, &orig, None).unwrap();
        let msg = super::super::msg::Messages::new(w.as_slice())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(msg.header.kind, 0x0101);
    }
}
