//! Fleets (docs/fleet.md): several idgate agents behind one HAProxy ([`super::stack::Options`]
//! `extra_agents`), and several HAProxy nodes sharing the per-identity rate limit through
//! HAProxy's `peers` ([`peer_env`], [`Haproxy::wait_peers_connected`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::haproxy::Haproxy;
use super::poll_until;

/// The shipped configuration's peer variables, one (name, address) pair per node.
const PEER_VARS: [(&str, &str); 3] = [
    ("IDGATE_PEER1_NAME", "IDGATE_PEER1_ADDR"),
    ("IDGATE_PEER2_NAME", "IDGATE_PEER2_ADDR"),
    ("IDGATE_PEER3_NAME", "IDGATE_PEER3_ADDR"),
];

/// The configuration variables of node `me` (0-based) of a fleet whose peers listen on
/// `addrs` (2 or 3 nodes; every node gets the same list, names `node1`, `node2`...).
pub fn peer_env(me: usize, addrs: &[SocketAddr]) -> Vec<(&'static str, String)> {
    assert!(
        (2..=PEER_VARS.len()).contains(&addrs.len()) && me < addrs.len(),
        "2 or 3 peers, node {me} among them"
    );
    let mut env = vec![("IDGATE_PEER_NAME", format!("node{}", me + 1))];
    for (i, (addr, (name_var, addr_var))) in addrs.iter().zip(PEER_VARS).enumerate() {
        env.push((name_var, format!("node{}", i + 1)));
        env.push((addr_var, addr.to_string()));
    }
    env
}

/// True when `show peers` lists at least one remote peer and every remote peer has an
/// established session (`state=EST`, on 2.6 to 3.4) in which the remote side has declared
/// each shared table (a `remote_id=N`, not 0, for every table): updates flow both ways.
/// Before that, a node counts alone.
fn peers_established(show_peers: &str) -> bool {
    /// Per remote peer: session established, tables seen, tables the remote has declared.
    #[derive(Default)]
    struct Remote {
        established: bool,
        tables: usize,
        declared: usize,
    }
    // One block per peer: it starts at the line naming it, `id=<name>(remote|local,...)`.
    let mut peers: Vec<Option<Remote>> = Vec::new();
    for line in show_peers.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let names = |kind: &str| {
            tokens
                .iter()
                .any(|t| t.starts_with("id=") && t.contains(kind))
        };
        if names("(local") {
            peers.push(None);
        } else if names("(remote") {
            peers.push(Some(Remote::default()));
        } else if let Some(Some(r)) = peers.last_mut() {
            r.established |= tokens.contains(&"state=EST");
            // A shared-table entry: `0x... local_id=N remote_id=M flags=...`.
            if tokens.get(1).is_some_and(|t| t.starts_with("local_id=")) {
                r.tables += 1;
                r.declared += usize::from(
                    tokens
                        .iter()
                        .any(|t| t.strip_prefix("remote_id=").is_some_and(|id| id != "0")),
                );
            }
        }
    }
    let remotes: Vec<Remote> = peers.into_iter().flatten().collect();
    !remotes.is_empty()
        && remotes
            .iter()
            .all(|r| r.established && r.tables > 0 && r.declared == r.tables)
}

impl Haproxy {
    /// Waits until every remote peer's session is established (see [`peers_established`]);
    /// false after `timeout`.
    pub fn wait_peers_connected(&self, timeout: Duration) -> bool {
        poll_until(timeout, || {
            peers_established(&self.runtime_api("show peers")).then_some(())
        })
        .is_some()
    }

    /// A server's health-check status (`UP`, `DOWN`, `UP 1/2`...), from `show stat`.
    pub fn server_status(&self, backend: &str, server: &str) -> Option<String> {
        let csv = self.runtime_api("show stat");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = header.iter().position(|h| *h == "status")?;
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&backend) && f.get(1) == Some(&server))
            .and_then(|f| f.get(col).map(|s| s.to_string()))
    }

    /// Waits until `server` of `backend` has a status starting with `prefix` (`UP`, `DOWN`);
    /// false after `timeout`.
    pub fn wait_server_status(
        &self,
        backend: &str,
        server: &str,
        prefix: &str,
        timeout: Duration,
    ) -> bool {
        poll_until(timeout, || {
            self.server_status(backend, server)
                .filter(|s| s.starts_with(prefix))
                .map(|_| ())
        })
        .is_some()
    }
}
