//! nfnetlink_cthelper: registering, updating, removing and listing user-space helpers.

use super::attr::{Attr, Attrs, Writer};
use super::msg::{
    Message, NFNETLINK_V0, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NfGenMsg,
};
use super::{Error, Result, nfnl_type, subsys};
use crate::model::Family;

pub const NFNL_MSG_CTHELPER_NEW: u8 = 0;
pub const NFNL_MSG_CTHELPER_GET: u8 = 1;
pub const NFNL_MSG_CTHELPER_DEL: u8 = 2;

const NFCTH_NAME: u16 = 1;
const NFCTH_TUPLE: u16 = 2;
const NFCTH_QUEUE_NUM: u16 = 3;
const NFCTH_POLICY: u16 = 4;
const NFCTH_PRIV_DATA_LEN: u16 = 5;
const NFCTH_STATUS: u16 = 6;

const NFCTH_TUPLE_L3PROTONUM: u16 = 1;
const NFCTH_TUPLE_L4PROTONUM: u16 = 2;

const NFCTH_POLICY_SET_NUM: u16 = 1;
const NFCTH_POLICY_SET1: u16 = 2;
const NFCTH_POLICY_NAME: u16 = 1;
const NFCTH_POLICY_EXPECT_MAX: u16 = 2;
const NFCTH_POLICY_EXPECT_TIMEOUT: u16 = 3;

pub const NFCT_HELPER_STATUS_DISABLED: u32 = 0;
pub const NFCT_HELPER_STATUS_ENABLED: u32 = 1;

/// The kernel keeps helper and policy names in 16 bytes including the NUL.
pub const NAME_MAX: usize = 15;
/// NF_CT_MAX_EXPECT_CLASSES: a NEW carries SET_NUM 1..=4 and SET1..SET4; more is
/// refused (EOVERFLOW), as is none (EINVAL).
pub const MAX_POLICIES: usize = 4;

/// Attribute tables indexed by type: one past the highest type read at each level.
const NFCTH_TABLE: usize = NFCTH_STATUS as usize + 1;
const NFCTH_TUPLE_TABLE: usize = NFCTH_TUPLE_L4PROTONUM as usize + 1;
const NFCTH_POLICY_TABLE: usize = NFCTH_POLICY_SET1 as usize + MAX_POLICIES;
const NFCTH_POLICY_SET_TABLE: usize = NFCTH_POLICY_EXPECT_TIMEOUT as usize + 1;

/// One expectation class of a helper: how many may be pending and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectPolicy<'a> {
    pub name: &'a str,
    pub max_expected: u32,
    pub timeout_secs: u32,
}

/// Everything the kernel needs to create a helper.
#[derive(Clone, Copy, Debug)]
pub struct Registration<'a> {
    pub name: &'a str,
    pub family: Family,
    pub l4proto: u8,
    pub queue: u16,
    pub policies: &'a [ExpectPolicy<'a>],
    pub private_len: u32,
    pub enabled: bool,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.as_bytes().contains(&0) {
        return Err(Error::Malformed("helper/policy name must be 1..15 bytes"));
    }
    Ok(())
}

fn header(w: &mut Writer<'_>, msg: u8, flags: u16, seq: u32) -> Result<super::attr::Mark> {
    w.begin_nfnl(
        nfnl_type(subsys::CTHELPER, msg),
        flags,
        seq,
        NfGenMsg {
            family: 0,
            version: NFNETLINK_V0,
            res_id: 0,
        },
    )
}

fn put_identity(w: &mut Writer<'_>, name: &str, family: Family, l4proto: u8) -> Result<()> {
    check_name(name)?;
    w.put_str(NFCTH_NAME, name)?;
    let t = w.begin_nested(NFCTH_TUPLE)?;
    w.put_be16(NFCTH_TUPLE_L3PROTONUM, u16::from(family.af()))?;
    w.put_u8(NFCTH_TUPLE_L4PROTONUM, l4proto)?;
    w.end_nested(t)
}

/// NEW: creates the helper, or updates queue, policy limits and status of an existing
/// one with the same name and tuple (the kernel refuses a changed private-data length
/// or policy shape with EBUSY).
pub fn write_new(w: &mut Writer<'_>, seq: u32, reg: &Registration<'_>) -> Result<()> {
    if reg.policies.is_empty() || reg.policies.len() > MAX_POLICIES {
        return Err(Error::Malformed("a helper needs 1..4 expectation policies"));
    }
    let m = header(
        w,
        NFNL_MSG_CTHELPER_NEW,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        seq,
    )?;
    put_identity(w, reg.name, reg.family, reg.l4proto)?;
    w.put_be32(NFCTH_QUEUE_NUM, u32::from(reg.queue))?;
    let p = w.begin_nested(NFCTH_POLICY)?;
    w.put_be32(NFCTH_POLICY_SET_NUM, reg.policies.len() as u32)?;
    for (set_kind, policy) in (NFCTH_POLICY_SET1..).zip(reg.policies) {
        check_name(policy.name)?;
        let set = w.begin_nested(set_kind)?;
        w.put_str(NFCTH_POLICY_NAME, policy.name)?;
        w.put_be32(NFCTH_POLICY_EXPECT_MAX, policy.max_expected)?;
        w.put_be32(NFCTH_POLICY_EXPECT_TIMEOUT, policy.timeout_secs)?;
        w.end_nested(set)?;
    }
    w.end_nested(p)?;
    w.put_be32(NFCTH_PRIV_DATA_LEN, reg.private_len)?;
    w.put_be32(
        NFCTH_STATUS,
        if reg.enabled {
            NFCT_HELPER_STATUS_ENABLED
        } else {
            NFCT_HELPER_STATUS_DISABLED
        },
    )?;
    w.end_msg(m)
}

/// NEW carrying only the status: switches an existing helper on or off without
/// touching anything else.
pub fn write_set_status(
    w: &mut Writer<'_>,
    seq: u32,
    name: &str,
    family: Family,
    l4proto: u8,
    enabled: bool,
) -> Result<()> {
    let m = header(w, NFNL_MSG_CTHELPER_NEW, NLM_F_REQUEST | NLM_F_ACK, seq)?;
    put_identity(w, name, family, l4proto)?;
    w.put_be32(
        NFCTH_STATUS,
        if enabled {
            NFCT_HELPER_STATUS_ENABLED
        } else {
            NFCT_HELPER_STATUS_DISABLED
        },
    )?;
    w.end_msg(m)
}

/// DEL of one helper (name and tuple).
pub fn write_del(
    w: &mut Writer<'_>,
    seq: u32,
    name: &str,
    family: Family,
    l4proto: u8,
) -> Result<()> {
    let m = header(w, NFNL_MSG_CTHELPER_DEL, NLM_F_REQUEST | NLM_F_ACK, seq)?;
    put_identity(w, name, family, l4proto)?;
    w.end_msg(m)
}

/// GET with NLM_F_DUMP: list all user-space helpers.
pub fn write_dump(w: &mut Writer<'_>, seq: u32) -> Result<()> {
    let m = header(
        w,
        NFNL_MSG_CTHELPER_GET,
        NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
        seq,
    )?;
    w.end_msg(m)
}

/// A helper as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperInfo<'a> {
    pub name: &'a str,
    pub family: Option<Family>,
    pub l4proto: u8,
    pub queue: u32,
    pub private_len: u32,
    pub enabled: bool,
    /// SET_NUM as the message gives it.
    pub policy_count: u32,
    /// The policy sets SET1.. in order, up to the first one missing.
    pub policies: heapless::Vec<ExpectPolicy<'a>, MAX_POLICIES>,
}

/// Decode one NEW message of a dump.
pub fn parse_helper<'a>(msg: &Message<'a>) -> Result<HelperInfo<'a>> {
    let (_, attrs) = msg.nfnl()?;
    let t: [Option<Attr>; NFCTH_TABLE] = attrs.table()?;
    let name = t[usize::from(NFCTH_NAME)]
        .ok_or(Error::Missing("NFCTH_NAME"))?
        .str()?;
    let tuple: [Option<Attr>; NFCTH_TUPLE_TABLE] = t[usize::from(NFCTH_TUPLE)]
        .ok_or(Error::Missing("NFCTH_TUPLE"))?
        .nested()
        .table()?;
    let l3 = tuple[usize::from(NFCTH_TUPLE_L3PROTONUM)]
        .ok_or(Error::Missing("NFCTH_TUPLE_L3PROTONUM"))?
        .be16()?;
    let l4proto = tuple[usize::from(NFCTH_TUPLE_L4PROTONUM)]
        .ok_or(Error::Missing("NFCTH_TUPLE_L4PROTONUM"))?
        .u8()?;
    let be32_or = |kind: u16, default: u32| -> Result<u32> {
        t[usize::from(kind)]
            .map(|a| a.be32())
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let (mut policy_count, mut policies) = (0, heapless::Vec::new());
    if let Some(policy) = t[usize::from(NFCTH_POLICY)] {
        let p: [Option<Attr>; NFCTH_POLICY_TABLE] = policy.nested().table()?;
        policy_count = p[usize::from(NFCTH_POLICY_SET_NUM)]
            .map(|a| a.be32())
            .transpose()?
            .unwrap_or(0);
        let sets = p
            .get(usize::from(NFCTH_POLICY_SET1)..)
            .unwrap_or(&[])
            .iter()
            .map_while(|set| *set);
        for set in sets {
            let s: [Option<Attr>; NFCTH_POLICY_SET_TABLE] = Attrs::new(set.payload).table()?;
            let policy = ExpectPolicy {
                name: s[usize::from(NFCTH_POLICY_NAME)]
                    .ok_or(Error::Missing("NFCTH_POLICY_NAME"))?
                    .str()?,
                max_expected: s[usize::from(NFCTH_POLICY_EXPECT_MAX)]
                    .ok_or(Error::Missing("NFCTH_POLICY_EXPECT_MAX"))?
                    .be32()?,
                timeout_secs: s[usize::from(NFCTH_POLICY_EXPECT_TIMEOUT)]
                    .ok_or(Error::Missing("NFCTH_POLICY_EXPECT_TIMEOUT"))?
                    .be32()?,
            };
            // The table has room for MAX_POLICIES sets exactly.
            let _ = policies.push(policy);
        }
    }
    Ok(HelperInfo {
        name,
        family: u8::try_from(l3).ok().and_then(Family::from_af),
        l4proto,
        queue: be32_or(NFCTH_QUEUE_NUM, 0)?,
        private_len: be32_or(NFCTH_PRIV_DATA_LEN, 0)?,
        enabled: be32_or(NFCTH_STATUS, 0)? == NFCT_HELPER_STATUS_ENABLED,
        policy_count,
        policies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::Messages;

    #[test]
    fn new_message_round_trips_through_the_dump_parser() {
        let policies = [ExpectPolicy {
            name: "ftp",
            max_expected: 1,
            timeout_secs: 300,
        }];
        let reg = Registration {
            name: "ftp",
            family: Family::Ipv6,
            l4proto: 6,
            queue: 3,
            policies: &policies,
            private_len: 20,
            enabled: true,
        };
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        write_new(&mut w, 1, &reg).unwrap();
        let msg = Messages::new(w.as_slice()).next().unwrap().unwrap();
        assert_eq!(msg.header.kind, 0x0900);
        let info = parse_helper(&msg).unwrap();
        assert_eq!(
            info,
            HelperInfo {
                name: "ftp",
                family: Some(Family::Ipv6),
                l4proto: 6,
                queue: 3,
                private_len: 20,
                enabled: true,
                policy_count: 1,
                policies: heapless::Vec::from_slice(&policies).unwrap(),
            }
        );
    }

    #[test]
    fn refuses_overlong_names_and_policy_counts() {
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        let policy = ExpectPolicy {
            name: "p",
            max_expected: 1,
            timeout_secs: 1,
        };
        let mut reg = Registration {
            name: "a-name-that-is-too-long",
            family: Family::Ipv4,
            l4proto: 6,
            queue: 0,
            policies: &[policy],
            private_len: 0,
            enabled: true,
        };
        assert!(write_new(&mut w, 1, &reg).is_err());
        reg.name = "ok";
        let five = [policy; 5];
        reg.policies = &five;
        assert!(write_new(&mut w, 1, &reg).is_err());
        reg.policies = &[];
        assert!(write_new(&mut w, 1, &reg).is_err());
    }

    #[test]
    fn status_and_del_carry_only_identity() {
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf);
        write_set_status(&mut w, 4, "tftp", Family::Ipv4, 17, false).unwrap();
        write_del(&mut w, 5, "tftp", Family::Ipv4, 17).unwrap();
        let msgs: Vec<_> = Messages::new(w.as_slice()).map(|m| m.unwrap()).collect();
        let (_, attrs) = msgs[0].nfnl().unwrap();
        let t: [Option<Attr>; 7] = attrs.table().unwrap();
        assert_eq!(t[6].unwrap().be32().unwrap(), NFCT_HELPER_STATUS_DISABLED);
        assert!(t[4].is_none() && t[5].is_none());
        assert_eq!(msgs[1].header.kind, 0x0902);
    }
}
