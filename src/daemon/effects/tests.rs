use super::*;
use crate::config::Config;
use crate::daemon::kernel::fake::*;
use crate::daemon::test_fixtures::*;
use crate::daemon::{CTL_BUF, MANGLE_BUF, examine, slots_from_config};
use crate::helpers::ftp::EndpointText;
use crate::helpers::{Plan, Replacement};
use crate::nat::ports::NAT_PORT_ATTEMPTS;
use crate::netlink::attr::Writer;
use crate::netlink::ctnetlink::{
    CTA_EXPECT_TIMEOUT, CTA_EXPECT_TUPLE, IPCTNL_MSG_EXP_DELETE, IPCTNL_MSG_EXP_GET,
    IPCTNL_MSG_EXP_NEW, parse_tuple,
};
use crate::netlink::msg::Messages;
use crate::netlink::msg::NLM_F_EXCL;
use crate::netlink::subsys;
use crate::private_cache::PrivateCache;
use std::time::Instant;

fn applied(port: Option<u16>) -> Applied {
    let mut ports = [None; MAX_EXPECTATIONS_PER_PACKET];
    ports[0] = port;
    Applied {
        attached: None,
        deferred: Expects::new(),
        ports,
    }
}

/// Make rewrite `i` of `plan` (an FTP 227) name `addr` instead.
fn respell(plan: &mut Plan, i: usize, addr: core::net::IpAddr) {
    let spelling = EndpointText::Commas.spelling(addr, plan).unwrap();
    let Replacement::Endpoint { expectation, .. } = plan.rewrites[i].with else {
        panic!("not an endpoint");
    };
    plan.rewrites[i].with = Replacement::Endpoint {
        expectation,
        spelling,
    };
}

#[test]
fn forwarded_227_is_rewritten_with_the_port_the_search_found() {
    let mut slots = slots_from_config(&Config::default()).unwrap();
    let mut buf = [0u8; 1024];
    let n = queued_forwarded_227(&mut buf);
    let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
    let pkt = queue::parse_packet(&msg).unwrap();
    let ex = examine(&mut slots, &mut PrivateCache::new(), &pkt, Instant::now()).unwrap();
    let exp = ex.plan.expectations[0].exp;
    assert_eq!(exp.dst, core::net::IpAddr::from([192, 0, 2, 1]));
    assert!(exp.nat.is_some());
    let mut out = [0u8; 2048];
    let slot = &mut slots[ex.slot];
    let got = rewrite(slot, &ex, &applied(Some(40001)), pkt.payload, &mut out);
    let Rewritten::Packet(len) = got else {
        panic!("not rewritten");
    };
    let d = crate::wire::dissect(&out[..len]).unwrap();
    assert_eq!(
        d.payload,
        b"227 Entering Passive Mode (192,0,2,1,156,65)\r\n"
    );
    assert_eq!(len, pkt.payload.len() - 3);
    assert_eq!(slot.stats.rewrite_errors, 0);

    // No expectation for the announcement: the packet is dropped, as nf_nat_ftp does.
    assert!(matches!(
        rewrite(slot, &ex, &applied(None), pkt.payload, &mut out),
        Rewritten::Drop
    ));
    assert_eq!(slot.stats.rewrite_errors, 1);

    // A buffer too small for the packet: dropped, counted (passing it unchanged
    // would leak the inside address next to an open pinhole).
    let mut tiny = [0u8; 40];
    assert_eq!(
        rewrite(slot, &ex, &applied(Some(40001)), pkt.payload, &mut tiny),
        Rewritten::Drop
    );
    assert_eq!(slot.stats.rewrite_errors, 2);

    // The announced endpoint already right (same address and port): nothing to send.
    let mut same = Plan {
        rewrites: ex.plan.rewrites.clone(),
        ..Plan::default()
    };
    respell(&mut same, 0, SERVER.into());
    let ex_same = Examined { plan: same, ..ex };
    assert!(matches!(
        rewrite(slot, &ex_same, &applied(Some(40000)), pkt.payload, &mut out),
        Rewritten::Unchanged
    ));
    assert_eq!(slot.stats.rewrite_errors, 2);
}

/// Run `answer` for one queued packet against `kernel`.
fn answer_with(
    kernel: &mut FakeKernel,
    slot: &mut Slot,
    ex: &Examined,
    payload: &[u8],
    mangle: &mut [u8],
) -> Answer {
    let mut buf = vec![0u8; CTL_BUF];
    let mut rx = vec![0u8; CTL_BUF];
    let mut ctl = Ctl {
        link: kernel,
        buf: &mut buf,
        rx: &mut rx,
    };
    answer(slot, ex, payload, mangle, &mut ctl)
}

/// The forwarded-227 fixture, examined: (slots, examined, layer-3 packet).
fn forwarded_227() -> (
    heapless::Vec<Slot, { crate::config::MAX_HELPERS }>,
    Examined,
    Vec<u8>,
) {
    let mut slots = slots_from_config(&Config::default()).unwrap();
    let mut buf = [0u8; 1024];
    let n = queued_forwarded_227(&mut buf);
    let msg = Messages::new(&buf[..n]).next().unwrap().unwrap();
    let pkt = queue::parse_packet(&msg).unwrap();
    let ex = examine(&mut slots, &mut PrivateCache::new(), &pkt, Instant::now()).unwrap();
    let payload = pkt.payload.to_vec();
    (slots, ex, payload)
}

/// The expectation tuple's destination port of an EXP request.
fn exp_port(d: &[u8]) -> u16 {
    let m = Messages::new(d).next().unwrap().unwrap();
    let t: [Option<crate::netlink::attr::Attr>; 12] = m.nfnl().unwrap().1.table().unwrap();
    parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].unwrap())
        .unwrap()
        .dst_port
}

/// A plan's master timeout (SIP's sip_timeout) goes on the verdict of a confirmed
/// conntrack only: on an unconfirmed one the kernel would add the current time twice.
#[test]
fn the_master_timeout_rides_on_verdicts_of_confirmed_conntracks_only() {
    let mut kernel = FakeKernel::acking();
    let (mut slots, mut ex, payload) = forwarded_227();
    ex.plan.expectations.clear();
    ex.plan.rewrites.clear();
    ex.plan.master_timeout = Some(3600);
    let mut mangle = vec![0u8; 2048];
    for (status, want) in [(status::CONFIRMED, Some(3600)), (0, None)] {
        ex.conntrack.status = status;
        let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
        assert_eq!(a.master_timeout, want, "status {status:#x}");
    }
    ex.plan.master_timeout = None;
    ex.conntrack.status = status::CONFIRMED;
    let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
    assert_eq!(a.master_timeout, None);
}

#[test]
fn a_nat_rewrite_that_changes_the_length_makes_the_verdict_carry_nfqa_ct() {
    // A 227 at a line start whose segment does not end the line: the private data
    // does not change, the rewrite shortens the payload by 3 bytes. Without NFQA_CT
    // the kernel would not record the sequence adjustment and the TCP stream would
    // desynchronise.
    let slots = slots_from_config(&Config::default()).unwrap();
    let (mut slots2, mut ex, payload) = forwarded_227();
    let _ = slots;
    ex.plan.private_changed = false;
    let mut kernel = FakeKernel::acking();
    let mut mangle = vec![0u8; MANGLE_BUF];
    let a = answer_with(
        &mut kernel,
        &mut slots2[ex.slot],
        &ex,
        &payload,
        &mut mangle,
    );
    assert_eq!(a.verdict, queue::PASS);
    assert_eq!(a.rewritten_len, Some(payload.len() - 3));
    assert!(!a.help && a.seq_adjust);
    let v = queue::Verdict {
        payload: a.rewritten_len.map(|n| &mangle[..n]),
        seq_adjust: a.seq_adjust,
        ..queue::Verdict::plain(0, 1, a.verdict)
    };
    let mut tx = [0u8; 512];
    let mut w = Writer::new(&mut tx);
    queue::write_verdict(&mut w, 0, &v).unwrap();
    let m = Messages::new(w.as_slice()).next().unwrap().unwrap();
    let t: [Option<crate::netlink::attr::Attr>; 16] = m.nfnl().unwrap().1.table().unwrap();
    assert!(t[11].is_some(), "NFQA_CT present");

    // Same length (already the translated text): no adjustment asked for.
    let (mut slots3, mut ex, payload) = forwarded_227();
    ex.plan.private_changed = false;
    respell(&mut ex.plan, 0, [198, 51, 100, 22].into());
    let a = answer_with(
        &mut kernel,
        &mut slots3[ex.slot],
        &ex,
        &payload,
        &mut mangle,
    );
    assert_eq!(a.rewritten_len, Some(payload.len() + 1));
    assert!(a.seq_adjust, "longer is a change too");
}

#[test]
fn a_rewrite_that_fails_drops_the_packet_and_deletes_its_expectation() {
    let (mut slots, ex, payload) = forwarded_227();
    let mut kernel = FakeKernel::acking();
    let mut tiny = [0u8; 40];
    let slot = &mut slots[ex.slot];
    let a = answer_with(&mut kernel, slot, &ex, &payload, &mut tiny);
    assert_eq!(a.verdict, queue::NF_DROP);
    assert_eq!(a.rewritten_len, None);
    assert_eq!(
        kernel.kinds(),
        vec![
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_NEW),
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_DELETE)
        ]
    );
    assert_eq!(exp_port(&kernel.sent.borrow()[1]), 156 * 256 + 64);
    assert_eq!((slot.stats.rewrite_errors, slot.stats.withdrawn), (1, 1));
    assert_eq!(slot.stats.rewritten, 0);
}

/// A plan that asks to pass an unrewritable packet (SIP) gets an accept of the
/// original packet; only its NAT expectations are withdrawn, one of the other side's
/// media (no NAT section) stays.
#[test]
fn a_rewrite_that_fails_passes_the_packet_when_the_plan_says_so() {
    let (mut slots, ex, payload) = forwarded_227();
    let mut plan = Plan {
        pass_unrewritable: true,
        ..Plan::default()
    };
    let mut direct = media(7000);
    direct.nat = None;
    plan.expect(direct).unwrap();
    plan.expect(media(5004)).unwrap();
    let spelling = EndpointText::Port
        .spelling(SERVER.into(), &mut plan)
        .unwrap();
    assert!(plan.rewrite(
        0,
        3,
        crate::helpers::Replacement::Endpoint {
            expectation: 1,
            spelling
        }
    ));
    let ex = Examined { plan, ..ex };
    let mut kernel = FakeKernel::acking();
    let mut tiny = [0u8; 40];
    let slot = &mut slots[ex.slot];
    let a = answer_with(&mut kernel, slot, &ex, &payload, &mut tiny);
    assert_eq!(a.verdict, queue::PASS);
    assert_eq!(a.rewritten_len, None);
    let deleted: Vec<u16> = requests(&kernel)
        .into_iter()
        .filter(|&(kind, _)| kind == IPCTNL_MSG_EXP_DELETE)
        .map(|(_, port)| port)
        .collect();
    assert_eq!(deleted, [5004]);
    assert_eq!((slot.stats.rewrite_errors, slot.stats.withdrawn), (1, 1));
}

#[test]
fn a_failed_ipv6_sequence_adjustment_drops_and_withdraws() {
    // An IPv6 master whose rewrite changes the length: the daemon must read the
    // conntrack's adjustment first; the kernel says ENOENT (the conntrack is gone).
    let (mut slots, mut ex, payload) = forwarded_227();
    let v6 = |s: &str| -> core::net::IpAddr { s.parse().unwrap() };
    ex.conntrack.orig.src = v6("2001:db8::9");
    ex.conntrack.orig.dst = v6("2001:db8::1");
    let mut kernel = FakeKernel::new(|m| {
        if m.header.subsys() == subsys::CTNETLINK {
            Reply::Errno(Errno::ENOENT)
        } else {
            Reply::Ack
        }
    });
    let mut mangle = vec![0u8; MANGLE_BUF];
    let slot = &mut slots[ex.slot];
    let a = answer_with(&mut kernel, slot, &ex, &payload, &mut mangle);
    assert_eq!(a.verdict, queue::NF_DROP);
    assert_eq!(
        kernel.kinds(),
        vec![
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_NEW),
            (subsys::CTNETLINK, ctnetlink::IPCTNL_MSG_CT_GET),
            (subsys::CTNETLINK_EXP, IPCTNL_MSG_EXP_DELETE)
        ]
    );
    assert_eq!(slot.stats.withdrawn, 1);
}

#[test]
fn our_own_pending_expectation_is_refreshed_with_its_timeout() {
    let (mut slots, ex, payload) = forwarded_227();
    let master = ex.conntrack.orig;
    let exp0 = ex.plan.expectations[0].exp;
    let mut kernel = FakeKernel::new(move |m| {
        match (m.header.nf_msg(), m.header.flags & NLM_F_EXCL != 0) {
            (IPCTNL_MSG_EXP_NEW, true) => Reply::Errno(Errno::EEXIST),
            (IPCTNL_MSG_EXP_GET, _) => {
                // The kernel's answer: an expectation message naming its master.
                let mut b = vec![0u8; 512];
                let mut w = Writer::new(&mut b);
                ctnetlink::write_exp_new(&mut w, m.header.seq, &exp0, &master, None, false, 1)
                    .unwrap();
                let n = w.len();
                Reply::Then(b[..n].to_vec())
            }
            _ => Reply::Ack,
        }
    });
    let mut mangle = vec![0u8; MANGLE_BUF];
    let slot = &mut slots[ex.slot];
    slot.classes[0].expect_timeout = 77;
    let a = answer_with(&mut kernel, slot, &ex, &payload, &mut mangle);
    assert_eq!(a.verdict, queue::PASS);
    let sent = kernel.sent.borrow();
    assert_eq!(sent.len(), 3, "NEW (exclusive), GET, NEW (refresh)");
    let refresh = Messages::new(&sent[2]).next().unwrap().unwrap();
    assert_eq!(refresh.header.flags & NLM_F_EXCL, 0);
    let t: [Option<crate::netlink::attr::Attr>; 12] = refresh.nfnl().unwrap().1.table().unwrap();
    assert_eq!(
        t[usize::from(CTA_EXPECT_TIMEOUT)].unwrap().be32().unwrap(),
        77,
        "a refresh without a timeout restarts no timer"
    );
    assert_eq!(exp_port(&sent[2]), exp0.dst_port, "keeps its port");
}

#[test]
fn the_port_search_moves_on_and_stops_at_65535_without_overflow() {
    let (mut slots, ex, payload) = forwarded_227();
    // Two ports taken by other masters: the third is used and announced.
    let mut taken = 2;
    let mut kernel = FakeKernel::new(move |m| {
        if m.header.nf_msg() == IPCTNL_MSG_EXP_NEW && taken > 0 {
            taken -= 1;
            Reply::Errno(Errno::EBUSY)
        } else {
            Reply::Ack
        }
    });
    let mut mangle = vec![0u8; MANGLE_BUF];
    let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
    let n = a.rewritten_len.unwrap();
    let d = crate::wire::dissect(&mangle[..n]).unwrap();
    assert_eq!(
        d.payload,
        b"227 Entering Passive Mode (192,0,2,1,156,66)\r\n"
    );
    assert_eq!(exp_port(&kernel.sent.borrow()[2]), 156 * 256 + 66);

    // Announced 65535 and taken: one try, an error, no wrap-around, no panic.
    let (mut slots, mut ex, payload) = forwarded_227();
    ex.plan.expectations[0].exp.dst_port = u16::MAX;
    let mut kernel = FakeKernel::new(|_| Reply::Errno(Errno::EBUSY));
    let slot = &mut slots[ex.slot];
    let a = answer_with(&mut kernel, slot, &ex, &payload, &mut mangle);
    assert_eq!(a.verdict, queue::NF_DROP);
    assert_eq!(kernel.sent.borrow().len(), 1);
    assert_eq!(slot.stats.expectation_errors, 1);

    // Every port taken: NAT_PORT_ATTEMPTS tries, then the packet is dropped.
    let (mut slots, ex, payload) = forwarded_227();
    let mut kernel = FakeKernel::new(|_| Reply::Errno(Errno::EBUSY));
    let a = answer_with(&mut kernel, &mut slots[ex.slot], &ex, &payload, &mut mangle);
    assert_eq!(a.verdict, queue::NF_DROP);
    assert_eq!(kernel.sent.borrow().len(), usize::from(NAT_PORT_ATTEMPTS));
}

/// An RTP or RTCP expectation of a port-forwarded master, NATed back to the server.
fn media(port: u16) -> Expectation {
    Expectation {
        class: 1,
        proto: crate::model::IPPROTO_UDP,
        src: [203, 0, 113, 9].into(),
        src_port: None,
        dst: [192, 0, 2, 1].into(),
        dst_port: port,
        flags: 0,
        nat: Some(crate::model::ExpectNat {
            dir: crate::model::Direction::Original,
            saved_addr: SERVER.into(),
            saved_port: port,
        }),
        helper: None,
    }
}

/// The forwarded-227 master with `plan` instead of the FTP helper's.
fn with_plan(
    plan: Plan,
) -> (
    heapless::Vec<Slot, { crate::config::MAX_HELPERS }>,
    Examined,
) {
    let (slots, ex, _) = forwarded_227();
    (slots, Examined { plan, ..ex })
}

/// Run `apply` against `kernel`.
fn apply_with(kernel: &mut FakeKernel, slot: &mut Slot, ex: &Examined) -> Applied {
    let mut buf = vec![0u8; CTL_BUF];
    let mut rx = vec![0u8; CTL_BUF];
    let mut ctl = Ctl {
        link: kernel,
        buf: &mut buf,
        rx: &mut rx,
    };
    apply(slot, ex, &mut ctl)
}

/// (message type, expectation port) of every request sent.
fn requests(kernel: &FakeKernel) -> Vec<(u8, u16)> {
    kernel
        .sent
        .borrow()
        .iter()
        .flat_map(|d| {
            Messages::new(d)
                .map(|m| {
                    let m = m.unwrap();
                    (m.header.nf_msg(), exp_port_of(&m))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_pair_moves_together_when_its_rtcp_port_is_taken() {
    let mut plan = Plan::default();
    assert_eq!(plan.expect_pair(media(5004), media(5005)), Some(0));
    let (mut slots, ex) = with_plan(plan);
    // Another master holds RTCP 5005 (and RTP 5008): RTP 5004 is withdrawn, the
    // pair moves to 5006/5007.
    let mut kernel = FakeKernel::new(|m| {
        let excl = m.header.flags & NLM_F_EXCL != 0;
        match (m.header.nf_msg(), exp_port_of(m)) {
            (IPCTNL_MSG_EXP_NEW, 5005 | 5008) if excl => Reply::Errno(Errno::EBUSY),
            _ => Reply::Ack,
        }
    });
    let slot = &mut slots[ex.slot];
    let applied = apply_with(&mut kernel, slot, &ex);
    assert_eq!(applied.ports[..2], [Some(5006), Some(5007)]);
    assert_eq!(
        requests(&kernel),
        [
            (IPCTNL_MSG_EXP_NEW, 5004),
            (IPCTNL_MSG_EXP_NEW, 5005),
            (IPCTNL_MSG_EXP_DELETE, 5004),
            (IPCTNL_MSG_EXP_NEW, 5006),
            (IPCTNL_MSG_EXP_NEW, 5007),
        ]
    );
    assert_eq!(
        (slot.stats.expectations, slot.stats.expectation_errors),
        (2, 0)
    );

    // A taken RTP port moves the pair to the next even port without touching RTCP.
    let mut plan = Plan::default();
    plan.expect_pair(media(5008), media(5009)).unwrap();
    let (mut slots, ex) = with_plan(plan);
    let applied = apply_with(&mut kernel, &mut slots[ex.slot], &ex);
    assert_eq!(applied.ports[..2], [Some(5010), Some(5011)]);
    assert_eq!(
        requests(&kernel)[5..],
        [
            (IPCTNL_MSG_EXP_NEW, 5008),
            (IPCTNL_MSG_EXP_NEW, 5010),
            (IPCTNL_MSG_EXP_NEW, 5011),
        ]
    );

    // A hard error on RTCP: neither is left, both count as errors.
    let mut plan = Plan::default();
    plan.expect_pair(media(6000), media(6001)).unwrap();
    let (mut slots, ex) = with_plan(plan);
    let mut kernel = FakeKernel::new(|m| match (m.header.nf_msg(), exp_port_of(m)) {
        (IPCTNL_MSG_EXP_NEW, 6001) => Reply::Errno(Errno::EPERM),
        _ => Reply::Ack,
    });
    let slot = &mut slots[ex.slot];
    let applied = apply_with(&mut kernel, slot, &ex);
    assert_eq!(applied.ports[..2], [None, None]);
    assert_eq!(
        requests(&kernel),
        [
            (IPCTNL_MSG_EXP_NEW, 6000),
            (IPCTNL_MSG_EXP_NEW, 6001),
            (IPCTNL_MSG_EXP_DELETE, 6000),
        ]
    );
    assert_eq!(
        (slot.stats.expectations, slot.stats.expectation_errors),
        (0, 2)
    );
}

/// The expectation tuple's destination port of a request as the fake kernel sees it.
fn exp_port_of(m: &crate::netlink::msg::Message<'_>) -> u16 {
    let t: [Option<crate::netlink::attr::Attr>; 12] = m.nfnl().unwrap().1.table().unwrap();
    t[usize::from(CTA_EXPECT_TUPLE)].map_or(0, |a| parse_tuple(a).unwrap().dst_port)
}

/// The kernel's answer to an EXP_GET: the expectation `exp`, naming its master.
fn held_by(seq: u32, exp: &Expectation, master: &Tuple) -> Reply {
    listed(seq, std::slice::from_ref(exp), master)
}

/// The kernel's answer to a dump of `master`'s expectations: `exps`.
fn listed(seq: u32, exps: &[Expectation], master: &Tuple) -> Reply {
    let mut b = vec![0u8; 2048];
    let mut w = Writer::new(&mut b);
    for e in exps {
        ctnetlink::write_exp_new(&mut w, seq, e, master, None, false, 1).unwrap();
    }
    let n = w.len();
    Reply::Then(b[..n].to_vec())
}

#[test]
fn deletions_come_first_and_touch_only_this_connections_expectations() {
    let mut plan = Plan::default();
    for port in [7000, 7002, 7004, 7006] {
        assert!(plan.delete(media(port).tuple()));
    }
    plan.expect(media(7000)).unwrap();
    let (mut slots, ex) = with_plan(plan);
    let ours = ex.conntrack.orig;
    let mut kernel = FakeKernel::new(move |m| match (m.header.nf_msg(), exp_port_of(m)) {
        // The dump of this connection's expectations: 7000 and 7004. 7002 is gone
        // (expired, used); 7006 is another connection's (say a phone's registration on
        // that port), so it is not listed either.
        (IPCTNL_MSG_EXP_GET, 0) => listed(m.header.seq, &[media(7000), media(7004)], &ours),
        (IPCTNL_MSG_EXP_DELETE, 7004) => Reply::Errno(Errno::EPERM),
        _ => Reply::Ack,
    });
    let slot = &mut slots[ex.slot];
    let applied = apply_with(&mut kernel, slot, &ex);
    // Deleted first, so a re-INVITE may ask for the same tuple again; one listing of
    // this connection's expectations, then the deletions in one datagram.
    assert_eq!(
        requests(&kernel),
        [
            (IPCTNL_MSG_EXP_GET, 0),
            (IPCTNL_MSG_EXP_DELETE, 7000),
            (IPCTNL_MSG_EXP_DELETE, 7004),
            (IPCTNL_MSG_EXP_NEW, 7000),
        ]
    );
    assert_eq!(kernel.sent.borrow().len(), 3, "three datagrams");
    assert_eq!(applied.ports[0], Some(7000));
    let s = slot.stats;
    assert_eq!((s.deleted, s.expectation_errors, s.expectations), (1, 1, 1));
    // The listing names the master (and no tuple); the deletion names the tuple only
    // (and the zone): the kernel finds it so.
    let sent = kernel.sent.borrow();
    let m = Messages::new(&sent[0]).next().unwrap().unwrap();
    let t: [Option<crate::netlink::attr::Attr>; 12] = m.nfnl().unwrap().1.table().unwrap();
    assert_eq!(
        parse_tuple(t[usize::from(ctnetlink::CTA_EXPECT_MASTER)].unwrap()).unwrap(),
        ours
    );
    assert_ne!(m.header.flags & crate::netlink::msg::NLM_F_DUMP, 0);
    let m = Messages::new(&sent[1]).next().unwrap().unwrap();
    assert_eq!(m.header.nf_msg(), IPCTNL_MSG_EXP_DELETE);
    let t: [Option<crate::netlink::attr::Attr>; 12] = m.nfnl().unwrap().1.table().unwrap();
    assert_eq!(
        parse_tuple(t[usize::from(CTA_EXPECT_TUPLE)].unwrap()).unwrap(),
        media(7000).tuple()
    );
    assert!(t[usize::from(ctnetlink::CTA_EXPECT_MASTER)].is_none());
}

/// Without NAT too, an expectation is created exclusively: the same tuple held by
/// another connection (a registration, another call) is neither refreshed nor taken
/// over; the announcement's expectation is an error, as the kernel's EBUSY.
#[test]
fn another_connections_expectation_is_not_taken_over() {
    let direct = Expectation {
        nat: None,
        ..media(7000)
    };
    let mut plan = Plan::default();
    plan.expect(direct).unwrap();
    let (mut slots, ex) = with_plan(plan);
    let theirs = Tuple {
        src_port: 41000,
        ..ex.conntrack.orig
    };
    let mut kernel =
        FakeKernel::new(
            move |m| match (m.header.nf_msg(), m.header.flags & NLM_F_EXCL != 0) {
                (IPCTNL_MSG_EXP_NEW, true) => Reply::Errno(Errno::EEXIST),
                (IPCTNL_MSG_EXP_GET, _) => held_by(m.header.seq, &direct, &theirs),
                _ => Reply::Ack,
            },
        );
    let slot = &mut slots[ex.slot];
    let applied = apply_with(&mut kernel, slot, &ex);
    assert_eq!(applied.ports[0], None);
    // The batch's NEW, the one-by-one NEW, its owner looked up; no refresh.
    assert_eq!(
        requests(&kernel),
        [
            (IPCTNL_MSG_EXP_NEW, 7000),
            (IPCTNL_MSG_EXP_NEW, 7000),
            (IPCTNL_MSG_EXP_GET, 7000)
        ],
    );
    let sent = kernel.sent.borrow();
    assert!(
        sent.iter()
            .flat_map(|d| Messages::new(d).map(|m| m.unwrap().header))
            .filter(|h| h.nf_msg() == IPCTNL_MSG_EXP_NEW)
            .all(|h| h.flags & NLM_F_EXCL != 0),
        "no non-exclusive NEW (refresh) of another connection's expectation"
    );
    assert_eq!(
        (slot.stats.expectations, slot.stats.expectation_errors),
        (0, 1)
    );
}

#[test]
fn an_unconfirmed_master_attaches_the_first_and_defers_the_rest() {
    let mut plan = Plan::default();
    plan.expect_pair(media(5004), media(5005)).unwrap();
    plan.expect(media(6000)).unwrap();
    plan.expect_pair(media(7000), media(7001)).unwrap();
    let (mut slots, mut ex) = with_plan(plan);
    ex.conntrack.status &= !status::CONFIRMED;
    let mut kernel = FakeKernel::acking();
    let mut mangle = vec![0u8; MANGLE_BUF];
    let slot = &mut slots[ex.slot];
    let a = answer_with(&mut kernel, slot, &ex, &[], &mut mangle);
    assert!(
        requests(&kernel)
            .iter()
            .all(|&(kind, _)| kind == IPCTNL_MSG_EXP_GET),
        "nothing but lookups of free ports before the verdict"
    );
    assert_eq!(a.attached.map(|e| e.dst_port), Some(5004));
    let deferred: Vec<_> = a
        .deferred
        .iter()
        .map(|e| (e.exp.dst_port, e.pairing))
        .collect();
    assert_eq!(
        deferred,
        [
            // Its RTP half rides on the verdict: on its own now.
            (5005, Pairing::Single),
            (6000, Pairing::Single),
            (7000, Pairing::Rtp),
            (7001, Pairing::Rtcp),
        ]
    );
    assert_eq!(slot.stats.expectations, 1, "the others count when created");
}

/// Behind NAT a deletion names the expectation by its announced port; one the port
/// search moved is found in a dump of the master's expectations by the real port its
/// NAT section translates to, and deleted; another one of the master stays.
#[test]
fn a_moved_nat_expectation_is_deleted_by_its_announced_port() {
    let mut plan = Plan::default();
    assert!(plan.delete(media(5004).tuple()));
    assert!(plan.delete(media(7000).tuple()));
    let (mut slots, ex) = with_plan(plan);
    assert!(ex.conntrack.is_nated());
    let master = ex.conntrack.orig;
    let moved = Expectation {
        dst_port: 5006,
        ..media(5004)
    };
    let mut kernel = FakeKernel::new(move |m| match (m.header.nf_msg(), exp_port_of(m)) {
        // The master's expectations: 7000 as announced, 5004's moved to 5006, and one
        // the packet does not name.
        (IPCTNL_MSG_EXP_GET, 0) => {
            listed(m.header.seq, &[media(7000), moved, media(8000)], &master)
        }
        _ => Reply::Ack,
    });
    let slot = &mut slots[ex.slot];
    apply_with(&mut kernel, slot, &ex);
    let deleted: Vec<u16> = requests(&kernel)
        .into_iter()
        .filter(|&(kind, _)| kind == IPCTNL_MSG_EXP_DELETE)
        .map(|(_, port)| port)
        .collect();
    assert_eq!(deleted, [7000, 5006]);
    assert_eq!(slot.stats.deleted, 2);

    // Without NAT a port that moved is not looked for: nothing is deleted on 5006.
    let mut plan = Plan::default();
    assert!(plan.delete(media(5004).tuple()));
    let (mut slots, mut ex) = with_plan(plan);
    ex.conntrack.status &= !status::NAT_MASK;
    let master = ex.conntrack.orig;
    let mut kernel = FakeKernel::new(move |m| listed(m.header.seq, &[moved], &master));
    apply_with(&mut kernel, &mut slots[ex.slot], &ex);
    assert_eq!(requests(&kernel), [(IPCTNL_MSG_EXP_GET, 0)]);
    // A connection gone meanwhile (ENOENT for its listing): nothing to delete.
    let mut kernel = FakeKernel::new(|_| Reply::Errno(Errno::ENOENT));
    apply_with(&mut kernel, &mut slots[ex.slot], &ex);
    assert_eq!(requests(&kernel), [(IPCTNL_MSG_EXP_GET, 0)]);
}

/// Behind NAT an unconfirmed master's ports are looked up before its verdict names
/// them: a pair whose RTP port another master expects moves to the next even pair (its
/// RTCP half rides on the verdict's deferred list on the moved port), a single on a
/// free port stays; the ports reported for the rewrites are the moved ones.
#[test]
fn an_unconfirmed_nat_master_looks_its_ports_up_first() {
    let mut plan = Plan::default();
    plan.expect_pair(media(5004), media(5005)).unwrap();
    plan.expect(media(6000)).unwrap();
    let (mut slots, mut ex) = with_plan(plan);
    ex.conntrack.status &= !status::CONFIRMED;
    let other = Tuple {
        src_port: 1234,
        ..ex.conntrack.orig
    };
    let mut kernel = FakeKernel::new(move |m| match (m.header.nf_msg(), exp_port_of(m)) {
        (IPCTNL_MSG_EXP_GET, 5004) => held_by(m.header.seq, &media(5004), &other),
        (IPCTNL_MSG_EXP_GET, _) => Reply::Errno(Errno::ENOENT),
        _ => Reply::Ack,
    });
    let slot = &mut slots[ex.slot];
    let applied = apply_with(&mut kernel, slot, &ex);
    assert_eq!(applied.ports[..3], [Some(5006), Some(5007), Some(6000)]);
    assert_eq!(applied.attached.map(|e| e.dst_port), Some(5006));
    assert_eq!(
        applied.attached.and_then(|e| e.nat).map(|n| n.saved_port),
        Some(5004),
        "still translated back to the announced port"
    );
    let deferred: Vec<_> = applied.deferred.iter().map(|e| e.exp.dst_port).collect();
    assert_eq!(deferred, [5007, 6000]);
    assert_eq!(
        requests(&kernel),
        [
            (IPCTNL_MSG_EXP_GET, 5004),
            (IPCTNL_MSG_EXP_GET, 5006),
            (IPCTNL_MSG_EXP_GET, 5007),
            (IPCTNL_MSG_EXP_GET, 6000),
        ]
    );

    // A retransmission queued before the first packet's verdict: its own conntrack,
    // same original tuple. The ports the first one took are this connection's: kept.
    let mut plan = Plan::default();
    plan.expect_pair(media(5004), media(5005)).unwrap();
    let (mut slots, mut ex) = with_plan(plan);
    ex.conntrack.status &= !status::CONFIRMED;
    let same = ex.conntrack.orig;
    let mut kernel = FakeKernel::new(move |m| match (m.header.nf_msg(), exp_port_of(m)) {
        (IPCTNL_MSG_EXP_GET, port) => held_by(m.header.seq, &media(port), &same),
        _ => Reply::Ack,
    });
    let applied = apply_with(&mut kernel, &mut slots[ex.slot], &ex);
    assert_eq!(applied.ports[..2], [Some(5004), Some(5005)]);
}

/// Without NAT a packet's expectations go out in one datagram (one round trip), and an
/// EEXIST for one this master already holds (a retransmitted announcement) still ends in
/// a refresh of it; the RTP half made in the batch is undone and made again with it.
#[test]
fn a_calls_expectations_go_out_in_one_batch() {
    let direct = |port| Expectation {
        nat: None,
        ..media(port)
    };
    let mut plan = Plan::default();
    plan.expect_pair(direct(40000), direct(40001)).unwrap();
    plan.expect_pair(direct(40010), direct(40011)).unwrap();
    let (mut slots, ex) = with_plan(plan);
    let mut kernel = FakeKernel::acking();
    let slot = &mut slots[ex.slot];
    let applied = apply_with(&mut kernel, slot, &ex);
    assert_eq!(kernel.sent.borrow().len(), 1, "one datagram");
    assert_eq!(
        requests(&kernel),
        [40000, 40001, 40010, 40011].map(|p| (IPCTNL_MSG_EXP_NEW, p))
    );
    // Only the last asks for an ACK: one answer to wait for (errors come regardless).
    let acks: Vec<bool> = Messages::new(&kernel.sent.borrow()[0])
        .map(|m| m.unwrap().header.flags & crate::netlink::msg::NLM_F_ACK != 0)
        .collect();
    assert_eq!(acks, [false, false, false, true]);
    assert_eq!(
        applied.ports[..4],
        [Some(40000), Some(40001), Some(40010), Some(40011)]
    );
    assert_eq!(slot.stats.expectations, 4);

    // The RTCP of the first pair is already ours (a retransmitted INVITE).
    let ours = ex.conntrack.orig;
    let mut kernel = FakeKernel::new(move |m| {
        match (
            m.header.nf_msg(),
            m.header.flags & NLM_F_EXCL != 0,
            exp_port_of(m),
        ) {
            (IPCTNL_MSG_EXP_NEW, true, 40001) => Reply::Errno(Errno::EEXIST),
            (IPCTNL_MSG_EXP_GET, _, port) => held_by(m.header.seq, &direct(port), &ours),
            _ => Reply::Ack,
        }
    });
    let slot = &mut slots[ex.slot];
    let before = slot.stats;
    let applied = apply_with(&mut kernel, slot, &ex);
    assert_eq!(
        requests(&kernel),
        [
            (IPCTNL_MSG_EXP_NEW, 40000),
            (IPCTNL_MSG_EXP_NEW, 40001),
            (IPCTNL_MSG_EXP_NEW, 40010),
            (IPCTNL_MSG_EXP_NEW, 40011),
            (IPCTNL_MSG_EXP_DELETE, 40000),
            (IPCTNL_MSG_EXP_NEW, 40000),
            (IPCTNL_MSG_EXP_NEW, 40001),
            (IPCTNL_MSG_EXP_GET, 40001),
            (IPCTNL_MSG_EXP_NEW, 40001),
        ]
    );
    assert_eq!(applied.ports[..2], [Some(40000), Some(40001)]);
    assert_eq!(slot.stats.expectations - before.expectations, 4);
    assert_eq!(slot.stats.expectation_errors, before.expectation_errors);
}
