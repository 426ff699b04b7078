//! idgate: an identity-aware HAProxy SPOE agent.
//!
//! Data flows: bytes from HAProxy -> [`spop`] (sans-IO protocol core) -> [`server`] (tokio shell)
//! -> [`authorize`] (SPOE message <-> [`decision`] types) -> [`engine`] (token extraction,
//! [`auth`] validation, [`policy`] evaluation, [`upstream`] credentials) -> a [`decision::Verdict`]
//! -> SPOP ACK actions.
//!
//! | module | role |
//! |---|---|
//! | [`spop`] | SPOP wire protocol: varints, typed data, frames, HELLO negotiation, connection state machine. No I/O. |
//! | [`server`] | listener, per-connection task, pipelined NOTIFY processing, graceful drain |
//! | [`shutdown`] | the drain signal fanned out to connection tasks |
//! | [`signal`] | SIGTERM/SIGINT |
//! | [`authorize`] | maps the `authorize` message to an [`decision::AuthzRequest`] and a verdict to ACK actions |
//! | [`decision`] | request, identity, verdict and reason-code types shared by everything |
//! | [`engine`] | the decision pipeline and the hot-swappable state |
//! | [`auth`] | OIDC issuers, JWKS lifecycle, JWT validation, validated-token cache |
//! | [`policy`] | first-match rule evaluation |
//! | [`upstream`] | Databricks credential broker |
//! | [`config`] | TOML configuration: read into typed values and checked in one place, every problem reported with its key path |
//! | [`metrics`] | Prometheus metrics and the admin HTTP endpoint |
//! | [`telemetry`] | logging setup, the audit log, rate-limited logging |
//! | [`token_key`] | the SHA-256 key of a caller's token, shared by the auth and upstream caches |
//! | [`systemd`] | sd_notify readiness, reload and watchdog notifications |
#![forbid(unsafe_code)]

pub mod auth;
pub mod authorize;
pub mod config;
pub mod decision;
pub mod engine;
pub mod explain;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod shutdown;
pub mod signal;
pub mod spop;
pub mod systemd;
pub mod telemetry;
pub mod token_key;
pub mod upstream;
