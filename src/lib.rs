//! idgate: an identity-aware HAProxy SPOE agent.
//!
//! Data flows down, once per NOTIFY: bytes from HAProxy -> [`spop`] (sans-IO protocol core, run
//! by the [`server`] shell) decodes the NOTIFY -> [`contract`] maps its `authorize` message to a
//! [`decision::AuthzRequest`] -> [`engine`] decides (token extraction, [`auth`] validation,
//! [`policy`] evaluation, [`upstream`] credentials) -> [`contract`] renders the
//! [`decision::Verdict`] as the contract's variables -> [`spop`] encodes the ACK.
//!
//! | module | role |
//! |---|---|
//! | [`spop`] | SPOP wire protocol: varints, typed data, frames, HELLO negotiation, connection state machine. No I/O. |
//! | [`server`] | listener, per-connection task, pipelined NOTIFY processing, graceful drain |
//! | [`shutdown`] | the drain signal fanned out to connection tasks |
//! | [`signal`] | SIGTERM/SIGINT |
//! | [`contract`] | what HAProxy sees: the `authorize` message as a request, a verdict as variables (one entry per NOTIFY: [`contract::answer`]) |
//! | [`decision`] | request, identity, verdict and reason-code types shared by everything |
//! | [`claim_path`] | how a configured claim name or dotted path finds a claim (tokens, identities, rules) |
//! | [`engine`] | the decision pipeline and the hot-swappable state |
//! | [`explain`] | `idgate explain`: one decision, rendered like the agent's ACK, as JSON |
//! | [`auth`] | OIDC issuers, JWKS lifecycle, JWT validation, validated-token cache |
//! | [`policy`] | first-match rule evaluation |
//! | [`upstream`] | Databricks credential broker |
//! | [`config`] | TOML configuration: read into typed values and checked in one place, every problem reported with its key path |
//! | [`metrics`] | Prometheus metrics and the admin HTTP endpoint |
//! | [`telemetry`] | logging setup, the audit log, rate-limited logging |
//! | [`token_key`] | the SHA-256 key of a caller's token, shared by the auth and upstream caches |
//! | [`systemd`] | sd_notify readiness, reload and watchdog notifications |
#![forbid(unsafe_code)]
// `pub` only where something outside the crate (the binary, tests, benches, fuzz targets) uses
// it: everything else is `pub(crate)` or private, so the public surface is what it says.
#![warn(unreachable_pub)]

pub mod auth;
pub mod claim_path;
pub mod config;
pub mod contract;
pub mod decision;
pub mod engine;
pub mod explain;
pub mod metrics;
pub mod outbound;
pub mod payload;
pub mod policy;
pub mod reload;
pub mod revocation;
pub mod server;
pub mod shutdown;
pub mod signal;
pub mod spop;
pub mod systemd;
pub mod telemetry;
pub mod token_key;
pub mod upstream;
