//! The fake DNS server of tests/support/dns.rs: answers as documented, over real UDP.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::dns::{matches, query, FakeDns, TYPE_A, TYPE_AAAA};

/// Sends one query and returns the reply.
fn ask(dns: &FakeDns, q: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(q, dns.addr).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = s.recv_from(&mut buf).expect("the fake DNS server answers");
    buf[..n].to_vec()
}

fn rcode(r: &[u8]) -> u8 {
    r[3] & 0x0f
}

fn count(r: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([r[at], r[at + 1]])
}

#[test]
fn answers_a_for_configured_names_and_nxdomain_otherwise() {
    let dns = FakeDns::start(&["*.serving.cloud.databricks.com", "exact.test"]);
    let q = query(0xbeef, "Abc123.Serving.Cloud.Databricks.com", TYPE_A);
    let r = ask(&dns, &q);
    assert_eq!(&r[..2], &[0xbe, 0xef], "ID copied");
    assert_eq!(r[2] & 0x80, 0x80, "QR set");
    assert_eq!(r[2] & 0x01, 0x01, "RD copied");
    assert_eq!(rcode(&r), 0);
    assert_eq!(
        (count(&r, 4), count(&r, 6)),
        (1, 1),
        "one question, one answer"
    );
    // Question echoed (without the query's OPT record), then the answer.
    let qlen = q.len() - 11 - 12;
    assert_eq!(&r[12..12 + qlen], &q[12..12 + qlen]);
    let ans = &r[12 + qlen..];
    assert_eq!(
        &ans[..2],
        &[0xc0, 0x0c],
        "name is a pointer to the question"
    );
    assert_eq!(count(ans, 2), TYPE_A);
    assert_eq!(count(ans, 10), 4);
    assert_eq!(&ans[12..16], &[127, 0, 0, 1]);

    let r = ask(&dns, &query(2, "exact.test", TYPE_A));
    assert_eq!((rcode(&r), count(&r, 6)), (0, 1));
    // The suffix alone, another name, a look-alike: NXDOMAIN.
    for name in [
        "serving.cloud.databricks.com",
        "workspace.idgate.test",
        "x.evilserving.cloud.databricks.com",
    ] {
        let r = ask(&dns, &query(3, name, TYPE_A));
        assert_eq!((rcode(&r), count(&r, 6)), (3, 0), "{name}");
    }
    // AAAA for a configured name: NODATA.
    let r = ask(&dns, &query(4, "a.serving.cloud.databricks.com", TYPE_AAAA));
    assert_eq!((rcode(&r), count(&r, 6)), (0, 0));

    assert_eq!(
        dns.queries("abc123.serving.cloud.databricks.com", TYPE_A),
        1
    );
    assert_eq!(dns.queries("a.serving.cloud.databricks.com", TYPE_AAAA), 1);
    dns.set_names(&[]);
    let r = ask(
        &dns,
        &query(5, "abc123.serving.cloud.databricks.com", TYPE_A),
    );
    assert_eq!(rcode(&r), 3, "names can be withdrawn");
}

#[test]
fn malformed_queries_are_refused_or_ignored() {
    let dns = FakeDns::start(&["a.test"]);
    // Two questions: FORMERR.
    let mut q = query(7, "a.test", TYPE_A);
    q[5] = 2;
    assert_eq!(rcode(&ask(&dns, &q)), 1);
    // A non-zero opcode (e.g. NOTIFY): NOTIMP.
    let mut q = query(8, "a.test", TYPE_A);
    q[2] |= 4 << 3;
    assert_eq!(rcode(&ask(&dns, &q)), 4);
    // Garbage and responses get no answer; the server keeps serving.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(&[1, 2, 3], dns.addr).unwrap();
    let mut resp = query(9, "a.test", TYPE_A);
    resp[2] |= 0x80;
    s.send_to(&resp, dns.addr).unwrap();
    let r = ask(&dns, &query(10, "a.test", TYPE_A));
    assert_eq!((rcode(&r), count(&r, 6)), (0, 1));
}

#[test]
fn wildcard_matching() {
    let p = vec!["*.serving.cloud.databricks.com".to_string()];
    assert!(matches(&p, "x.serving.cloud.databricks.com"));
    assert!(matches(&p, "a.b.serving.cloud.databricks.com"));
    assert!(!matches(&p, "serving.cloud.databricks.com"));
    assert!(!matches(&p, ".serving.cloud.databricks.com"));
    assert!(!matches(&p, "xserving.cloud.databricks.com"));
}
