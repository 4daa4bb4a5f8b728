//! Netlink message headers (struct nlmsghdr + struct nfgenmsg): reading a datagram
//! of messages, writing requests, and decoding kernel errors/acks.

use super::attr::{Attr, Attrs, Mark, Writer, align};
use super::{Error, Result};

pub const NLMSG_HDRLEN: usize = 16;
pub const NFGENMSG_LEN: usize = 4;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// On NLMSG_ERROR: the echoed request was cut to its header.
pub const NLM_F_CAPPED: u16 = 0x100;
/// On NLMSG_ERROR: extended-ack TLVs follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

const NLMSGERR_ATTR_MSG: u16 = 1;

pub const NFNETLINK_V0: u8 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

impl Header {
    pub fn parse(buf: &[u8]) -> Result<Header> {
        let b = buf.get(..NLMSG_HDRLEN).ok_or(Error::Truncated)?;
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(Header {
            len: u32_at(0),
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32_at(8),
            pid: u32_at(12),
        })
    }

    pub fn emit(&self, out: &mut [u8; NLMSG_HDRLEN]) {
        out[0..4].copy_from_slice(&self.len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        out[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        out[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        out[12..16].copy_from_slice(&self.pid.to_ne_bytes());
    }

    pub fn subsys(&self) -> u8 {
        (self.kind >> 8) as u8
    }

    pub fn nf_msg(&self) -> u8 {
        (self.kind & 0xff) as u8
    }
}

/// struct nfgenmsg, which follows the header of every nfnetlink message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NfGenMsg {
    pub family: u8,
    pub version: u8,
    pub res_id: u16,
}

impl NfGenMsg {
    pub fn parse(buf: &[u8]) -> Result<NfGenMsg> {
        let b = buf.get(..NFGENMSG_LEN).ok_or(Error::Truncated)?;
        Ok(NfGenMsg {
            family: b[0],
            version: b[1],
            res_id: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn emit(&self) -> [u8; NFGENMSG_LEN] {
        let id = self.res_id.to_be_bytes();
        [self.family, self.version, id[0], id[1]]
    }
}

/// One message of a datagram.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub header: Header,
    /// Everything after the nlmsghdr.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The nfgenmsg and the attributes after it.
    pub fn nfnl(&self) -> Result<(NfGenMsg, Attrs<'a>)> {
        let gen_msg = NfGenMsg::parse(self.payload)?;
        let attrs = self.payload.get(NFGENMSG_LEN..).ok_or(Error::Truncated)?;
        Ok((gen_msg, Attrs::new(attrs)))
    }

    /// For NLMSG_ERROR: the error (0 is an ACK, otherwise a negative errno), the
    /// sequence number of the request it answers, and the kernel's extended-ack
    /// message if it sent one.
    pub fn error(&self) -> Result<Option<KernelError<'a>>> {
        if self.header.kind != NLMSG_ERROR {
            return Ok(None);
        }
        let b = self.payload.get(..4).ok_or(Error::Truncated)?;
        let code = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let request = self.payload.get(4..).ok_or(Error::Truncated)?;
        let req_header = Header::parse(request)?;
        let mut text = None;
        if self.header.flags & NLM_F_ACK_TLVS != 0 {
            let echoed = if self.header.flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                align(req_header.len as usize)
            };
            if let Some(tlvs) = request.get(echoed..) {
                for attr in Attrs::new(tlvs).flatten() {
                    if attr.kind == NLMSGERR_ATTR_MSG {
                        text = attr.str().ok();
                    }
                }
            }
        }
        Ok(Some(KernelError {
            // i32::MIN has no positive counterpart; no real errno is near it.
            errno: code.checked_neg().unwrap_or(i32::MAX),
            seq: req_header.seq,
            text,
        }))
    }
}

/// The kernel's answer to a request: errno 0 is success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelError<'a> {
    pub errno: i32,
    pub seq: u32,
    pub text: Option<&'a str>,
}

/// Iterates over the messages of one received datagram.
#[derive(Clone, Copy, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Messages { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let header = match Header::parse(self.rest) {
            Ok(h) => h,
            Err(e) => {
                self.rest = &[];
                return Some(Err(e));
            }
        };
        let len = header.len as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Error::Truncated));
        }
        let payload = &self.rest[NLMSG_HDRLEN..len];
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Ok(Message { header, payload }))
    }
}

/// Netlink message writing on top of the attribute writer.
impl Writer<'_> {
    /// Start an nfnetlink message; finish it with `end_msg`.
    pub fn begin_nfnl(
        &mut self,
        kind: u16,
        flags: u16,
        seq: u32,
        gen_msg: NfGenMsg,
    ) -> Result<Mark> {
        let mark = self.mark_here();
        let at = self.reserve(NLMSG_HDRLEN)?;
        let mut h = [0u8; NLMSG_HDRLEN];
        Header {
            len: 0,
            kind,
            flags,
            seq,
            pid: 0,
        }
        .emit(&mut h);
        self.write_at(at, &h)?;
        self.put_raw(&gen_msg.emit())?;
        Ok(mark)
    }

    pub fn end_msg(&mut self, mark: Mark) -> Result<()> {
        let start = mark.offset();
        let len = u32::try_from(self.len() - start).map_err(|_| Error::BufferFull)?;
        self.write_at(start, &len.to_ne_bytes())
    }
}

/// Convenience for tests and diagnostics: the first attribute of `kind` in a run.
pub fn find_attr<'a>(attrs: Attrs<'a>, kind: u16) -> Result<Option<Attr<'a>>> {
    for attr in attrs {
        let attr = attr?;
        if attr.kind == kind {
            return Ok(Some(attr));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            len: 40,
            kind: 0x0901,
            flags: NLM_F_REQUEST | NLM_F_ACK,
            seq: 7,
            pid: 99,
        };
        let mut b = [0u8; NLMSG_HDRLEN];
        h.emit(&mut b);
        assert_eq!(Header::parse(&b).unwrap(), h);
        assert_eq!(h.subsys(), 9);
        assert_eq!(h.nf_msg(), 1);
    }

    #[test]
    fn writes_a_message_and_iterates_it() {
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf);
        for seq in 1..=2 {
            let m = w
                .begin_nfnl(
                    0x0300 | 2,
                    NLM_F_REQUEST,
                    seq,
                    NfGenMsg {
                        family: 0,
                        version: 0,
                        res_id: 5,
                    },
                )
                .unwrap();
            w.put_be32(3, 1024).unwrap();
            w.end_msg(m).unwrap();
        }
        let msgs: Vec<_> = Messages::new(w.as_slice()).collect();
        assert_eq!(msgs.len(), 2);
        let m = msgs[1].unwrap();
        assert_eq!(m.header.len, 16 + 4 + 8);
        assert_eq!(m.header.seq, 2);
        let (g, attrs) = m.nfnl().unwrap();
        assert_eq!(g.res_id, 5);
        assert_eq!(find_attr(attrs, 3).unwrap().unwrap().be32().unwrap(), 1024);
    }

    #[test]
    fn decodes_ack_and_extended_error() {
        // NLMSG_ERROR, capped, with an ext-ack message.
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        let mut h = [0u8; NLMSG_HDRLEN];
        Header {
            len: 16 + 4 + 16 + 16,
            kind: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 3,
            pid: 0,
        }
        .emit(&mut h);
        w.put_raw(&h).unwrap();
        w.put_raw(&(-16i32).to_ne_bytes()).unwrap();
        let mut req = [0u8; NLMSG_HDRLEN];
        Header {
            len: 64,
            kind: 0x0900,
            flags: 5,
            seq: 3,
            pid: 0,
        }
        .emit(&mut req);
        w.put_raw(&req).unwrap();
        w.put_str(NLMSGERR_ATTR_MSG, "busy yes").unwrap();
        let m = Messages::new(w.as_slice()).next().unwrap().unwrap();
        let e = m.error().unwrap().unwrap();
        assert_eq!(e.errno, 16);
        assert_eq!(e.seq, 3);
        assert_eq!(e.text, Some("busy yes"));
    }

    #[test]
    fn error_code_of_i32_min_does_not_overflow() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        let mut h = [0u8; NLMSG_HDRLEN];
        Header {
            len: 16 + 4 + 16,
            kind: NLMSG_ERROR,
            flags: NLM_F_ACK_TLVS,
            seq: 1,
            pid: 0,
        }
        .emit(&mut h);
        w.put_raw(&h).unwrap();
        w.put_raw(&i32::MIN.to_ne_bytes()).unwrap();
        let mut req = [0u8; NLMSG_HDRLEN];
        Header {
            len: u32::MAX,
            kind: 0,
            flags: 0,
            seq: 1,
            pid: 0,
        }
        .emit(&mut req);
        w.put_raw(&req).unwrap();
        let m = Messages::new(w.as_slice()).next().unwrap().unwrap();
        let e = m.error().unwrap().unwrap();
        assert_eq!(e.errno, i32::MAX);
        assert_eq!(e.text, None);
    }

    #[test]
    fn stops_on_truncated_message() {
        let mut b = [0u8; 20];
        Header {
            len: 200,
            kind: 1,
            flags: 0,
            seq: 0,
            pid: 0,
        }
        .emit((&mut b[..16]).try_into().unwrap());
        let mut it = Messages::new(&b);
        assert!(matches!(it.next(), Some(Err(Error::Truncated))));
        assert!(it.next().is_none());
    }
}
