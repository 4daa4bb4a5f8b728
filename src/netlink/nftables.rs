//! nf_tables: asking the kernel for one table's comment. The daemon writes a comment
//! naming its configuration into its own table (firewall.rs); after a crash the
//! restarted daemon reads it back here and keeps a table that already is the one it
//! would load, instead of running nft again while connections wait for their helpers.

use super::attr::{Attr, Writer};
use super::msg::{Message, NFNETLINK_V0, NLM_F_ACK, NLM_F_REQUEST, NfGenMsg};
use super::{Error, Result, nfnl_type};

/// NFNL_SUBSYS_NFTABLES.
pub const SUBSYS: u8 = 10;
pub const NFT_MSG_NEWTABLE: u8 = 0;
pub const NFT_MSG_GETTABLE: u8 = 1;

/// NFPROTO_INET: the family of an `inet` table.
pub const NFPROTO_INET: u8 = 1;

const NFTA_TABLE_NAME: u16 = 1;
/// Kernels since 5.10 keep it; older ones ignore it (no comment is then read back).
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_TABLE_TABLE: usize = NFTA_TABLE_USERDATA as usize + 1;

/// libnftnl's user data is a run of (type u8, length u8, value) records; the table
/// comment is type 0, a NUL-terminated string.
const UDATA_TABLE_COMMENT: u8 = 0;

/// The kernel keeps table names in NFT_TABLE_MAXNAMELEN (256) bytes including the NUL.
pub const NAME_MAX: usize = 255;

/// GET of table `name` in `family`: answered by a NEWTABLE message, then the ACK
/// (ENOENT when there is no such table).
pub fn write_get_table(w: &mut Writer<'_>, seq: u32, family: u8, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.as_bytes().contains(&0) {
        return Err(Error::Malformed("table name must be 1..255 bytes"));
    }
    let m = w.begin_nfnl(
        nfnl_type(SUBSYS, NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NfGenMsg {
            family,
            version: NFNETLINK_V0,
            res_id: 0,
        },
    )?;
    w.put_str(NFTA_TABLE_NAME, name)?;
    w.end_msg(m)
}

/// A table as the kernel describes it: its name and its comment, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo<'a> {
    pub name: &'a str,
    pub comment: Option<&'a str>,
}

/// Read a NEWTABLE message (the answer to [`write_get_table`]).
pub fn parse_table<'a>(msg: &Message<'a>) -> Result<TableInfo<'a>> {
    if msg.header.kind != nfnl_type(SUBSYS, NFT_MSG_NEWTABLE) {
        return Err(Error::Malformed("not an nf_tables table message"));
    }
    let (_, attrs) = msg.nfnl()?;
    let t: [Option<Attr>; NFTA_TABLE_TABLE] = attrs.table()?;
    let name = t[usize::from(NFTA_TABLE_NAME)]
        .ok_or(Error::Missing("NFTA_TABLE_NAME"))?
        .str()?;
    let comment = match t[usize::from(NFTA_TABLE_USERDATA)] {
        Some(a) => udata_comment(a.payload)?,
        None => None,
    };
    Ok(TableInfo { name, comment })
}

/// The comment record of a table's user data, without its NUL.
fn udata_comment(mut udata: &[u8]) -> Result<Option<&str>> {
    while let [kind, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len)).ok_or(Error::Malformed(
            "user data record longer than its attribute",
        ))?;
        udata = &rest[value.len()..];
        if *kind == UDATA_TABLE_COMMENT {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return core::str::from_utf8(&value[..end])
                .map(Some)
                .map_err(|_| Error::Malformed("table comment is not UTF-8"));
        }
    }
    Ok(None)
}

/// A NEWTABLE message as the kernel sends it (answering request `seq`), with `udata`
/// as NFTA_TABLE_USERDATA.
#[cfg(test)]
pub(crate) fn table_message(seq: u32, name: &str, udata: Option<&[u8]>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = Writer::new(&mut buf);
    let m = w
        .begin_nfnl(
            nfnl_type(SUBSYS, NFT_MSG_NEWTABLE),
            0,
            seq,
            NfGenMsg {
                family: NFPROTO_INET,
                version: NFNETLINK_V0,
                res_id: 0,
            },
        )
        .unwrap();
    w.put_str(NFTA_TABLE_NAME, name).unwrap();
    w.put_be32(2, 0).unwrap(); // NFTA_TABLE_FLAGS
    if let Some(u) = udata {
        w.put(NFTA_TABLE_USERDATA, u).unwrap();
    }
    w.end_msg(m).unwrap();
    let len = w.len();
    buf.truncate(len);
    buf
}

/// User data as nft writes a table comment: one record, type 0, with the NUL.
#[cfg(test)]
pub(crate) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut v = vec![UDATA_TABLE_COMMENT, comment.len() as u8 + 1];
    v.extend_from_slice(comment.as_bytes());
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::Messages;

    fn newtable(name: &str, udata: Option<&[u8]>) -> Vec<u8> {
        table_message(7, name, udata)
    }

    fn parse(bytes: &[u8]) -> Result<TableInfo<'_>> {
        let msg = Messages::new(bytes).next().unwrap().unwrap();
        parse_table(&msg)
    }

    #[test]
    fn get_table_request_names_family_and_table() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        write_get_table(&mut w, 9, NFPROTO_INET, "cthelperd").unwrap();
        let len = w.len();
        let msg = Messages::new(&buf[..len]).next().unwrap().unwrap();
        assert_eq!(msg.header.kind, 0x0a01);
        assert_eq!(msg.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(msg.header.seq, 9);
        let (nfgen, attrs) = msg.nfnl().unwrap();
        assert_eq!(nfgen.family, NFPROTO_INET);
        let a: Vec<_> = attrs.map(|a| a.unwrap()).collect();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].kind, a[0].payload), (1, &b"cthelperd\0"[..]));
        let mut w = Writer::new(&mut buf);
        assert!(write_get_table(&mut w, 1, NFPROTO_INET, "").is_err());
        assert!(write_get_table(&mut w, 1, NFPROTO_INET, "a\0b").is_err());
    }

    #[test]
    fn the_comment_is_read_from_the_user_data() {
        // As nft 1.0 writes `comment "cthelperd 0123"`: type 0, length with the NUL.
        let udata = b"\x00\x0fcthelperd 0123\x00";
        let t = newtable("cthelperd", Some(udata));
        assert_eq!(
            parse(&t).unwrap(),
            TableInfo {
                name: "cthelperd",
                comment: Some("cthelperd 0123")
            }
        );
        // Another record first (a later nft may add some), then the comment.
        let udata = b"\x05\x02ab\x00\x03xy\x00";
        assert_eq!(
            parse(&newtable("t", Some(udata))).unwrap().comment,
            Some("xy")
        );
        // No user data (a table without comment, or a kernel before 5.10).
        assert_eq!(parse(&newtable("t", None)).unwrap().comment, None);
        assert_eq!(parse(&newtable("t", Some(b""))).unwrap().comment, None);
        // Records without a comment; a trailing byte too short for a record.
        assert_eq!(
            parse(&newtable("t", Some(b"\x01\x01z\x07")))
                .unwrap()
                .comment,
            None
        );
    }

    #[test]
    fn malformed_user_data_is_an_error_not_a_comment() {
        // A record claiming more bytes than there are.
        assert!(parse(&newtable("t", Some(b"\x00\x09short"))).is_err());
        assert!(parse(&newtable("t", Some(b"\x00\x02\xff\xfe"))).is_err());
        // Not a table message.
        let mut other = newtable("t", None);
        other[4] = 0x02; // nlmsg_type low byte: NFT_MSG_DELTABLE
        assert!(parse(&other).is_err());
    }
}
