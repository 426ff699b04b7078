//! A null SPOA: idgate's SPOP core and server with a decision that allows everything at once
//! (`allow=true`, `status=200`, `reason=ok`). Benchmarks use it to measure the protocol and
//! shell overhead without any decision cost (benches/e2e.sh frontend (c)).
//!
//! Usage: `cargo run --release --example null_agent [LISTEN_ADDR]` (default 127.0.0.1:12346).
//! Stops on SIGTERM/SIGINT. Worker threads: TOKIO_WORKER_THREADS (default: one per CPU).

use std::net::SocketAddr;
use std::sync::Arc;

use idgate::config::SpopConfig;
use idgate::decision::{Authorizer, AuthzRequest, Reason, Verdict};

const DEFAULT_LISTEN: &str = "127.0.0.1:12346";

/// Allows every request without looking at it. With `NULL_AGENT_IDENTITY=1` the answer also
/// carries the identity variables idgate sends for a benchmark token (`sub`, `email`, `groups`,
/// `issuer`, `rule`, `principal`): a null agent whose answer costs HAProxy as much to apply as
/// idgate's, so that the difference left between the two is idgate's own.
struct Null(Option<Verdict>);

impl Authorizer for Null {
    async fn authorize(&self, _req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
        match &self.0 {
            Some(v) => v.clone(),
            None => Verdict::allow(Reason::Ok),
        }
    }
}

/// The verdict idgate reaches for the benchmark's hot token (benches/e2e/idgate.toml.in,
/// `loadgen mint`): same variables, same lengths.
fn identity_verdict() -> Verdict {
    let sub = "hot-user".to_owned();
    Verdict {
        identity: Some(Arc::new(idgate::decision::Identity {
            issuer: Arc::from("bench"),
            sub: sub.clone(),
            user: None,
            email: Some(format!("{sub}@bench.example")),
            groups: vec!["bench".to_owned()],
            scopes: vec!["read".to_owned(), "write".to_owned()],
            expires_at: u64::MAX,
            issued_at: None,
            jti: None,
            claims: serde_json::Map::new(),
        })),
        rule: Some(Arc::from("bench")),
        principal: Some(sub),
        ..Verdict::allow(Reason::Ok)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or(DEFAULT_LISTEN)
        .parse()?;
    let cfg = SpopConfig {
        listen: idgate::config::ListenAddr::Tcp(listen),
        ..SpopConfig::default()
    };
    let listener = idgate::server::bind(listen, cfg.backlog)?;
    eprintln!("null agent listening on {}", listener.local_addr()?);
    let answer =
        (std::env::var("NULL_AGENT_IDENTITY").as_deref() == Ok("1")).then(identity_verdict);
    idgate::server::serve(
        listener,
        cfg,
        Arc::new(Null(answer)),
        idgate::signal::shutdown(),
    )
    .await;
    Ok(())
}
