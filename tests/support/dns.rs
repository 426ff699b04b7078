//! A fake DNS server for HAProxy's resolver: UDP on 127.0.0.1:<random port>, answering `A`
//! queries for configured names (exact, or `*.suffix` for any name below the suffix) with
//! 127.0.0.1, and NXDOMAIN for every other name.
//!
//! Enough of RFC 1035 for HAProxy (`resolvers` section, `do-resolve`, server `resolvers`):
//! one question per query, the ID, opcode and RD bit copied, the question echoed, names
//! compared case-insensitively, answers pointing at the question's name (compression pointer
//! 0xC00C). HAProxy adds an EDNS0 OPT record to its queries (additional section); it is
//! accepted and not echoed (a reply without OPT is a plain RFC 1035 answer, which HAProxy
//! takes). A configured name asked for another type (`AAAA`) gets NOERROR with no answer
//! (NODATA), so a resolver that prefers IPv6 falls back to IPv4 instead of failing.
//!
//! Runs on its own thread; dropping the handle stops it. Counts queries per (name, type).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
/// TTL of the answers, seconds.
const TTL: u32 = 60;
/// How often the server thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Shared {
    names: Mutex<Vec<String>>,
    queries: Mutex<HashMap<(String, u16), u64>>,
}

/// A running fake DNS server; stops on drop.
pub struct FakeDns {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    /// Starts answering for `names` (e.g. `["*.serving.cloud.databricks.com"]`).
    pub fn start(names: &[&str]) -> FakeDns {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("binding the fake DNS server");
        sock.set_read_timeout(Some(POLL)).expect("socket timeout");
        let addr = sock.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        *shared.names.lock().unwrap() = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("fake-dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop2.load(Ordering::SeqCst) {
                    let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(reply) = answer(&s2, &buf[..n]) {
                        let _ = sock.send_to(&reply, peer);
                    }
                }
            })
            .expect("spawning the fake DNS thread");
        FakeDns {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Replaces the names answered.
    pub fn set_names(&self, names: &[&str]) {
        *self.shared.names.lock().unwrap() = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    }

    /// Queries received for `name` (lower-case, no trailing dot) of type `qtype`.
    pub fn queries(&self, name: &str, qtype: u16) -> u64 {
        self.shared
            .queries
            .lock()
            .unwrap()
            .get(&(name.to_ascii_lowercase(), qtype))
            .copied()
            .unwrap_or(0)
    }

    /// Every query received, per (name, type).
    pub fn all_queries(&self) -> HashMap<(String, u16), u64> {
        self.shared.queries.lock().unwrap().clone()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// True if `name` is one of `patterns` (`*.suffix`: any name with at least one more label).
pub fn matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => p == name,
    })
}

/// The reply to one datagram, or `None` for something that is not a query at all.
fn answer(shared: &Shared, q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None; // too short, or a response
    }
    let opcode = (q[2] >> 3) & 0x0f;
    let rd = q[2] & 0x01;
    let qdcount = u16::from_be_bytes([q[4], q[5]]);
    let header = |rcode: u8, qd: u16, an: u16| -> Vec<u8> {
        let mut h = vec![q[0], q[1], 0x80 | (opcode << 3) | rd, 0x80 | rcode];
        h.extend_from_slice(&qd.to_be_bytes());
        h.extend_from_slice(&an.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    };
    if opcode != 0 {
        return Some(header(RCODE_NOTIMP, 0, 0));
    }
    if qdcount != 1 {
        return Some(header(RCODE_FORMERR, 0, 0));
    }
    // QNAME: uncompressed labels up to the root label.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return Some(header(RCODE_FORMERR, 0, 0));
        }
        let label = q.get(i + 1..i + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += 1 + len;
    }
    let end = i + 4;
    let fixed = q.get(i..end)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    let name = labels.join(".");
    *shared
        .queries
        .lock()
        .unwrap()
        .entry((name.clone(), qtype))
        .or_default() += 1;
    let question = &q[12..end];
    let known = matches(&shared.names.lock().unwrap(), &name);
    let mut r = if !known {
        header(RCODE_NXDOMAIN, 1, 0)
    } else if qtype == TYPE_A && qclass == CLASS_IN {
        header(0, 1, 1)
    } else {
        header(0, 1, 0) // NODATA
    };
    r.extend_from_slice(question);
    if known && qtype == TYPE_A && qclass == CLASS_IN {
        r.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&TTL.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&[127, 0, 0, 1]);
    }
    Some(r)
}

/// A query for `name`/`qtype` with ID `id` and an EDNS0 OPT record, as HAProxy sends them
/// (for tests of this server).
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root name, type 41, UDP payload 1232, no extended rcode/flags, no data.
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    q
}
