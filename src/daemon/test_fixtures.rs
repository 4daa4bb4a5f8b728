//! Queued-packet fixtures shared by the daemon's tests: messages as the kernel builds
//! them, for a plain and a port-forwarded FTP control connection and a TFTP request.

use crate::config::Config;
use crate::daemon::{Examined, Skip, Slot, examine};
use crate::model::{IPPROTO_TCP, Tuple, ctinfo, status};
use crate::netlink::attr::Writer;
use crate::netlink::ctnetlink::{self, CTA_HELP_INFO, CTA_HELP_NAME, put_tuple};
use crate::netlink::msg::{Messages, NfGenMsg};
use crate::netlink::queue;
use crate::netlink::subsys;
use crate::netlink::{nfnl_type, queue::NFQNL_MSG_PACKET};
use crate::private_cache::PrivateCache;

pub(crate) const CLIENT: [u8; 4] = [192, 0, 2, 2];
pub(crate) const SERVER: [u8; 4] = [198, 51, 100, 2];

/// Original and reply tuples of a client -> server connection to `port`.
pub(crate) fn tuples(proto: u8, port: u16) -> (Tuple, Tuple) {
    let orig = Tuple {
        src: CLIENT.into(),
        dst: SERVER.into(),
        proto,
        src_port: 40000,
        dst_port: port,
    };
    (orig, orig.reversed())
}

/// The conntrack part of a queued packet (NFQA_CT and NFQA_CT_INFO).
pub(crate) struct CtFixture<'a> {
    pub(crate) tuples: (Tuple, Tuple),
    pub(crate) status: u32,
    pub(crate) helper: Option<&'a str>,
    pub(crate) info: Option<&'a [u8]>,
    pub(crate) ct_info: u32,
}

/// A PACKET message as the kernel builds it: queue, layer-3 packet, conntrack.
pub(crate) fn write_queued(
    buf: &mut [u8],
    queue: u16,
    ip: &[u8],
    ct: Option<&CtFixture<'_>>,
) -> usize {
    let mut w = Writer::new(buf);
    let m = w
        .begin_nfnl(
            nfnl_type(subsys::QUEUE, NFQNL_MSG_PACKET),
            0,
            0,
            NfGenMsg {
                family: 2,
                version: 0,
                res_id: queue,
            },
        )
        .unwrap();
    w.put(1, &[0, 0, 0, 9, 8, 0, 4]).unwrap();
    w.put(10, ip).unwrap();
    if let Some(ct) = ct {
        let nest = w.begin_nested(11).unwrap();
        put_tuple(&mut w, 1, &ct.tuples.0).unwrap();
        put_tuple(&mut w, 2, &ct.tuples.1).unwrap();
        w.put_be32(3, ct.status).unwrap();
        w.put_be32(ctnetlink::CTA_ID, 0x1234_5678).unwrap();
        if let Some(name) = ct.helper {
            let h = w.begin_nested(5).unwrap();
            w.put_str(CTA_HELP_NAME, name).unwrap();
            if let Some(info) = ct.info {
                w.put(CTA_HELP_INFO, info).unwrap();
            }
            w.end_nested(h).unwrap();
        }
        w.end_nested(nest).unwrap();
        w.put_be32(12, ct.ct_info).unwrap();
    }
    w.end_msg(m).unwrap();
    w.len()
}

/// A reply-direction segment of an established FTP control connection.
pub(crate) fn queued(
    buf: &mut [u8],
    helper: Option<&str>,
    info: &[u8],
    seq: u32,
    text: &[u8],
    with_ct: bool,
) -> usize {
    let ip = crate::wire::ipv4::tests::build(
        SERVER,
        CLIENT,
        IPPROTO_TCP,
        &crate::wire::tcp::tests::build(21, 40000, seq, 0x18, text),
    );
    let ct = CtFixture {
        tuples: tuples(IPPROTO_TCP, 21),
        status: status::CONFIRMED | status::SEEN_REPLY,
        helper,
        info: Some(info),
        ct_info: ctinfo::ESTABLISHED_REPLY,
    };
    write_queued(
        buf,
        Config::default().queue_of(0),
        &ip,
        with_ct.then_some(&ct),
    )
}

pub(crate) fn run(slots: &mut [Slot], buf: &[u8]) -> Result<Examined, Skip> {
    let msg = Messages::new(buf).next().unwrap().unwrap();
    let pkt = queue::parse_packet(&msg).unwrap();
    examine(
        slots,
        &mut PrivateCache::new(),
        &pkt,
        std::time::Instant::now(),
    )
}

/// A 227 from a port-forwarded server (outside client 203.0.113.9 -> 192.0.2.1:21,
/// forwarded to 198.51.100.2:21), queued with private data that makes it parsed.
pub(crate) fn queued_forwarded_227(buf: &mut [u8]) -> usize {
    queued_forwarded(buf, b"227 Entering Passive Mode (198,51,100,2,156,64)\r\n")
}

/// A reply segment `text` from that port-forwarded server.
pub(crate) fn queued_forwarded(buf: &mut [u8], text: &[u8]) -> usize {
    let public: [u8; 4] = [192, 0, 2, 1];
    let outside: [u8; 4] = [203, 0, 113, 9];
    let ip = crate::wire::ipv4::tests::build(
        public,
        outside,
        IPPROTO_TCP,
        &crate::wire::tcp::tests::build(21, 50000, 7000, 0x18, text),
    );
    let orig = Tuple {
        src: outside.into(),
        dst: public.into(),
        proto: IPPROTO_TCP,
        src_port: 50000,
        dst_port: 21,
    };
    let reply = Tuple {
        src: SERVER.into(),
        dst: outside.into(),
        proto: IPPROTO_TCP,
        src_port: 21,
        dst_port: 50000,
    };
    let mut info = [0u8; 32];
    crate::helpers::ftp::State::picked_up().encode(&mut info);
    let ct = CtFixture {
        tuples: (orig, reply),
        status: status::CONFIRMED | status::SEEN_REPLY | status::DST_NAT,
        helper: Some("ftp"),
        info: Some(&info),
        ct_info: ctinfo::ESTABLISHED_REPLY,
    };
    write_queued(buf, Config::default().queue_of(0), &ip, Some(&ct))
}
