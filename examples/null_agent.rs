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

/// Allows every request without looking at it.
struct Null;

impl Authorizer for Null {
    async fn authorize(&self, _req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
        Verdict::allow(Reason::Ok)
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
    idgate::server::serve(listener, cfg, Arc::new(Null), idgate::signal::shutdown()).await;
    Ok(())
}
