//! The FTP helper behind NAT: rewrites of PORT/EPRT/227/229 to the translated endpoint,
//! the expectation on the public address that follows the master back, and what is not
//! rewritten.

use super::*;

/// The one rewrite of a plan: the text it replaces, and what it writes with the
/// announced port.
fn one_rewrite(a: &Plan, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(a.rewrites.len(), 1, "{a:?}");
    let rw = a.rewrites[0];
    let Replacement::Endpoint {
        expectation: 0,
        spelling,
    } = rw.with
    else {
        panic!("not an endpoint of the first expectation: {rw:?}");
    };
    let mut out = [0u8; crate::nat::REPLACEMENT_MAX];
    let n = crate::nat::endpoint_text(a, spelling, one(a).dst_port, &mut out).unwrap();
    (payload[rw.start..rw.end].to_vec(), out[..n].to_vec())
}

/// An endpoint as `text` spells it for a NAT rewrite, with `port`.
fn spelled(text: EndpointText, addr: IpAddr, port: u16) -> Option<Vec<u8>> {
    let mut plan = Plan::default();
    let spelling = text.spelling(addr, &mut plan)?;
    let mut out = [0u8; crate::nat::REPLACEMENT_MAX];
    let n = crate::nat::endpoint_text(&plan, spelling, port, &mut out).unwrap();
    Some(out[..n].to_vec())
}

#[test]
fn endpoint_spellings() {
    let a = v4([203, 0, 113, 1]);
    let commas = |port| spelled(EndpointText::Commas, a, port).unwrap();
    assert_eq!(commas(40000), b"203,0,113,1,156,64");
    assert_eq!(commas(1), b"203,0,113,1,0,1");
    let eprt = |delim, addr, port| spelled(EndpointText::Eprt { delim }, addr, port).unwrap();
    assert_eq!(eprt(b'|', a, 65535), b"|1|203.0.113.1|65535|");
    let six = v6("2001:db8:ffff::1");
    assert_eq!(eprt(b'!', six, 21), b"!2!2001:db8:ffff::1!21!");
    assert_eq!(spelled(EndpointText::Port, six, 50001).unwrap(), b"50001");
    assert_eq!(spelled(EndpointText::Commas, six, 1), None);
    // The longest text there is fits.
    let longest = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert_eq!(eprt(b'|', longest, 65535).len(), 3 + 39 + 7);
}

#[test]
fn the_search_table_matches_each_pattern_in_its_direction_only() {
    let lines: [(&[u8], Direction); 4] = [
        (b"port 192,168,1,10,4,1", Direction::Original),
        (b"EPRT |1|192.168.1.10|1025|", Direction::Original),
        (b"227 (192,168,1,20,4,1)", Direction::Reply),
        (b"229 (|||1025|)", Direction::Reply),
    ];
    for (s, (line, dir)) in SEARCH.iter().zip(lines) {
        assert_eq!(s.dir, dir);
        let args = s.arguments(line).expect("recognised");
        let ann = (s.parse)(args).expect("parsed");
        assert_eq!(ann.port, 1025, "{}", s.what);
        let others = SEARCH.iter().filter(|o| o.pattern != s.pattern);
        assert!(others.into_iter().all(|o| o.arguments(line).is_none()));
    }
    // A longer word is not a verb; a bare verb is (with malformed arguments); reply
    // codes need their space.
    assert!(SEARCH[0].arguments(b"PORTAL 1").is_none());
    assert_eq!(SEARCH[0].arguments(b"PORT"), Some(&b""[..]));
    assert!(SEARCH[2].arguments(b"227").is_none());
    assert!(SEARCH[2].arguments(b"227-(1,2,3,4,5,6)").is_none());
}

#[test]
fn nat_port_expects_on_the_public_address_and_follows_master_back() {
    let (cli, public, srv) = MASQ4;
    let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
    let line = b"PORT 192,0,2,2,156,64\r\n";
    let a = c.client(line);
    let e = one(&a);
    assert_eq!(
        (e.src, e.src_port, e.dst, e.dst_port),
        (srv, None, public, 40000)
    );
    assert_eq!(
        e.nat,
        Some(ExpectNat {
            dir: Direction::Reply,
            saved_addr: cli,
            saved_port: 40000
        })
    );
    let (text, new) = one_rewrite(&a, line);
    assert_eq!(text, b"192,0,2,2,156,64");
    assert_eq!(new, b"203,0,113,1,156,64", "commas, the public address");
}

#[test]
fn nat_eprt_rewrite_covers_delimiters_and_keeps_the_senders() {
    let (cli, public, srv) = MASQ4;
    let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
    let line = b"EPRT !1!192.0.2.2!40001!  \r\n";
    let a = c.client(line);
    assert_eq!(one(&a).dst_port, 40001);
    let (text, new) = one_rewrite(&a, line);
    assert_eq!(text, b"!1!192.0.2.2!40001!");
    assert_eq!(new, b"!1!203.0.113.1!40001!", "the sender's delimiter");
}

#[test]
fn nat_eprt_ipv6() {
    let (cli, public, srv) = (
        v6("2001:db8:1::2"),
        v6("2001:db8:ffff::1"),
        v6("2001:db8:2::2"),
    );
    let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
    let line = b"EPRT |2|2001:db8:1::2|40002|\r\n";
    let a = c.client(line);
    let e = one(&a);
    assert_eq!((e.src, e.dst, e.dst_port), (srv, public, 40002));
    let (text, new) = one_rewrite(&a, line);
    assert_eq!(text, b"|2|2001:db8:1::2|40002|");
    assert_eq!(new, b"|2|2001:db8:ffff::1|40002|");
}

#[test]
fn nat_227_from_a_port_forwarded_server() {
    let ct = port_forwarded();
    let mut c = Conn::new(ct).warmed();
    let line = b"227 Entering Passive Mode (198,51,100,2,195,80).\r\n";
    let a = c.server(line);
    let e = one(&a);
    // Expected from the outside client, to the forwarded address, and mapped back
    // to the real server (the master's reply source).
    assert_eq!(
        (e.src, e.dst, e.dst_port),
        (ct.orig.src, ct.orig.dst, 50000)
    );
    assert_eq!(
        e.nat,
        Some(ExpectNat {
            dir: Direction::Original,
            saved_addr: ct.reply.src,
            saved_port: 50000
        })
    );
    let (text, new) = one_rewrite(&a, line);
    assert_eq!(text, b"198,51,100,2,195,80");
    assert_eq!(ct.orig.dst, v4([192, 0, 2, 1]));
    assert_eq!(new, b"192,0,2,1,195,80", "the forwarded address");
}

#[test]
fn nat_229_rewrites_the_port_digits_only() {
    let mut c = Conn::new(port_forwarded()).warmed();
    let line = b"229 Entering Extended Passive Mode (|||50001|)\r\n";
    let a = c.server(line);
    assert_eq!(one(&a).dst_port, 50001);
    let (text, new) = one_rewrite(&a, line);
    assert_eq!(text, b"50001");
    assert_eq!(new, b"50001", "the port alone");
}

#[test]
fn nat_only_the_first_announcement_of_a_segment_is_rewritten() {
    // Later lines are not parsed (as in the kernel), so they are not rewritten either:
    // the inside address in the EPRT goes out as the client wrote it, and no
    // expectation stands behind it.
    let (cli, public, srv) = MASQ4;
    let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
    let seg = b"PORT 192,0,2,2,8,21\r\nNOOP\r\nEPRT |1|192.0.2.2|2070|\r\n";
    let a = c.client(seg);
    assert_eq!(one(&a).dst_port, 2069);
    let (text, new) = one_rewrite(&a, seg);
    assert_eq!(text, b"192,0,2,2,8,21");
    assert_eq!(new, b"203,0,113,1,8,21");
}

#[test]
fn nat_third_party_is_refused_without_rewrite() {
    let (cli, public, srv) = MASQ4;
    let mut c = Conn::new(masqueraded(cli, public, srv)).warmed();
    // The public address is not the sender's real address either.
    for line in [&b"PORT 192,0,2,99,4,1\r\n"[..], b"PORT 203,0,113,1,4,1\r\n"] {
        let a = c.client(line);
        assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
        assert_eq!(a.refusals.len(), 1);
    }
}

#[test]
fn without_nat_nothing_is_rewritten() {
    let mut c = Conn::v4().warmed();
    let a = c.client(b"PORT 192,168,1,10,156,64\r\n");
    assert_eq!(one(&a).nat, None);
    assert!(a.rewrites.is_empty());
}
