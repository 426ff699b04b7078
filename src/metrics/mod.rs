//! Prometheus metrics (contract §5) and the admin HTTP endpoint.
//!
//! All metrics live in one process-wide registry reached through [`metrics()`]. Label values
//! come only from bounded sets: reason codes, frame types, configured issuer and upstream
//! names, fixed result words. Never a token, subject, path or other caller-controlled text.
//!
//! Why `prometheus` and not `prometheus-client`: it ships the standard `process_*` collector
//! (CPU, RSS, open fds, start time) that operators' dashboards expect, and its counters are
//! plain atomics on the hot path once a labelled child is resolved.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub mod admin;

/// Histogram buckets from 5 µs to 10 s: a cached decision takes microseconds, a cold one with
/// a JWKS or token-endpoint round trip can take seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    pub registry: Registry,
    /// `idgate_decisions_total{decision="allow|deny",reason}`
    pub decisions: IntCounterVec,
    /// `idgate_decision_duration_seconds`
    pub decision_duration: Histogram,
    /// `idgate_spop_connections` (currently open)
    pub spop_connections: IntGauge,
    /// `idgate_spop_frames_total{type}` (`haproxy_hello`, `notify`, `ack`, ...)
    pub spop_frames: IntCounterVec,
    /// `idgate_spop_connection_errors_total{status}`: connections closed with a SPOP error status
    pub spop_connection_errors: IntCounterVec,
    /// `idgate_spop_connections_evicted_total`: idle connections closed at the connection limit
    /// to admit a new one
    pub spop_connections_evicted: IntCounter,
    /// `idgate_spop_listener_info{kind="tcp|unix",address}` = 1: where SPOP is served
    pub spop_listener: IntGaugeVec,
    /// `idgate_admin_connections_evicted_total`: idle admin connections closed at the admin
    /// connection limit to admit a new one
    pub admin_connections_evicted: IntCounter,
    /// `idgate_token_cache_requests_total{result="hit|miss"}`
    pub token_cache_requests: IntCounterVec,
    /// `idgate_jwks_refresh_total{issuer,result="success|failure|not_modified"}`
    pub jwks_refresh: IntCounterVec,
    /// `idgate_introspection_requests_total{issuer,result}`: calls to an introspection
    /// endpoint (RFC 7662), by result (`active|inactive|refused|unavailable|invalid`)
    pub introspection_requests: IntCounterVec,
    /// `idgate_introspection_cache_requests_total{issuer,result="hit|miss"}`
    pub introspection_cache_requests: IntCounterVec,
    /// `idgate_jwks_keys{issuer}`: keys currently usable
    pub jwks_keys: IntGaugeVec,
    /// `idgate_jwks_last_success_timestamp_seconds{issuer}`
    pub jwks_last_success: IntGaugeVec,
    /// `idgate_upstream_token_requests_total{upstream,result}`
    pub upstream_token_requests: IntCounterVec,
    /// `idgate_upstream_token_duration_seconds{upstream}`
    pub upstream_token_duration: HistogramVec,
    /// `idgate_config_reloads_total{result="success|failure"}`
    pub config_reloads: IntCounterVec,
    /// `idgate_payload_checks_total{result="valid|invalid|too_large|unchecked|schema_unavailable|schema_stale"}`:
    /// request bodies checked by rules with `payload` (docs/payload.md)
    pub payload_checks: IntCounterVec,
    /// `idgate_build_info{version}` = 1
    pub build_info: IntGaugeVec,
    /// `idgate_log_lines_dropped_total{stream="log|audit"}`: lines a full log buffer dropped
    /// (see `telemetry::LOG_BUFFER_LINES`); brought up to date on every scrape.
    pub log_lines_dropped: IntCounterVec,
    /// Resolved `idgate_decisions_total` children, indexed by reason (the decision label follows
    /// from the reason's status), so the hot path does no label hashing or locking.
    /// Only the series that can count: `ok` and `public` are allows, every other reason a deny
    /// (a `decision="allow",reason="no_matching_rule"` series would be zero forever).
    decision_children: Vec<IntCounter>,
    /// `idgate_ready`: 1 when `/ready` would answer 200, else 0. Updated by the admin endpoint
    /// on every `/ready` and `/metrics` request, so a scrape always carries a fresh value and
    /// alerts can fire on "not ready for N minutes" without probing `/ready` separately.
    pub ready: IntGauge,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "idgate_decisions_total",
                "Decisions taken, by outcome and reason code",
            ),
            &["decision", "reason"],
        )
        .expect("metric");
        let decision_duration = Histogram::with_opts(
            HistogramOpts::new(
                "idgate_decision_duration_seconds",
                "Time from NOTIFY decoded to verdict ready",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("metric");
        let spop_connections =
            IntGauge::new("idgate_spop_connections", "Open SPOP connections").expect("metric");
        let spop_frames = IntCounterVec::new(
            Opts::new(
                "idgate_spop_frames_total",
                "SPOP frames received and sent, by type",
            ),
            &["type"],
        )
        .expect("metric");
        let spop_connection_errors = IntCounterVec::new(
            Opts::new(
                "idgate_spop_connection_errors_total",
                "SPOP connections closed because of a protocol error, by SPOP status",
            ),
            &["status"],
        )
        .expect("metric");
        let spop_connections_evicted = IntCounter::new(
            "idgate_spop_connections_evicted_total",
            "Idle SPOP connections closed at spop.max_connections to admit a new one",
        )
        .expect("metric");
        let spop_listener = IntGaugeVec::new(
            Opts::new(
                "idgate_spop_listener_info",
                "The SPOP listener: kind (tcp or unix) and address (from spop.listen); always 1",
            ),
            &["kind", "address"],
        )
        .expect("metric");
        let admin_connections_evicted = IntCounter::new(
            "idgate_admin_connections_evicted_total",
            "Idle admin HTTP connections closed at the admin connection limit to admit a new one",
        )
        .expect("metric");
        let token_cache_requests = IntCounterVec::new(
            Opts::new(
                "idgate_token_cache_requests_total",
                "Validated-token cache lookups",
            ),
            &["result"],
        )
        .expect("metric");
        let introspection_requests = IntCounterVec::new(
            Opts::new(
                "idgate_introspection_requests_total",
                "Calls to an issuer's token introspection endpoint, by result",
            ),
            &["issuer", "result"],
        )
        .expect("metric");
        let introspection_cache_requests = IntCounterVec::new(
            Opts::new(
                "idgate_introspection_cache_requests_total",
                "Introspection cache lookups (one per token of an introspection issuer), by result",
            ),
            &["issuer", "result"],
        )
        .expect("metric");
        let jwks_refresh = IntCounterVec::new(
            Opts::new(
                "idgate_jwks_refresh_total",
                "JWKS fetches, by issuer and result",
            ),
            &["issuer", "result"],
        )
        .expect("metric");
        let jwks_keys = IntGaugeVec::new(
            Opts::new("idgate_jwks_keys", "Usable signing keys per issuer"),
            &["issuer"],
        )
        .expect("metric");
        let jwks_last_success = IntGaugeVec::new(
            Opts::new(
                "idgate_jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch per issuer",
            ),
            &["issuer"],
        )
        .expect("metric");
        let upstream_token_requests = IntCounterVec::new(
            Opts::new(
                "idgate_upstream_token_requests_total",
                "Requests to upstream token endpoints, by upstream and result",
            ),
            &["upstream", "result"],
        )
        .expect("metric");
        let upstream_token_duration = HistogramVec::new(
            HistogramOpts::new(
                "idgate_upstream_token_duration_seconds",
                "Duration of upstream token requests",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "idgate_config_reloads_total",
                "Configuration reloads, by result",
            ),
            &["result"],
        )
        .expect("metric");
        let build_info = IntGaugeVec::new(
            Opts::new("idgate_build_info", "Build information"),
            &["version"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let log_lines_dropped = IntCounterVec::new(
            Opts::new(
                "idgate_log_lines_dropped_total",
                "Log and audit lines dropped because the writer's buffer was full",
            ),
            &["stream"],
        )
        .expect("metric");
        for stream in ["log", "audit"] {
            log_lines_dropped.with_label_values(&[stream]);
        }
        let payload_checks = IntCounterVec::new(
            Opts::new(
                "idgate_payload_checks_total",
                "Request bodies checked by payload rules, by result",
            ),
            &["result"],
        )
        .expect("metric");
        let ready = IntGauge::new(
            "idgate_ready",
            "1 when the agent is ready (SPOP listener up, every issuer's keys loaded), else 0",
        )
        .expect("metric");

        for c in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(decision_duration.clone()),
            Box::new(spop_connections.clone()),
            Box::new(spop_frames.clone()),
            Box::new(spop_connection_errors.clone()),
            Box::new(spop_connections_evicted.clone()),
            Box::new(spop_listener.clone()),
            Box::new(admin_connections_evicted.clone()),
            Box::new(token_cache_requests.clone()),
            Box::new(jwks_refresh.clone()),
            Box::new(introspection_requests.clone()),
            Box::new(introspection_cache_requests.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(jwks_last_success.clone()),
            Box::new(upstream_token_requests.clone()),
            Box::new(upstream_token_duration.clone()),
            Box::new(config_reloads.clone()),
            Box::new(payload_checks.clone()),
            Box::new(build_info.clone()),
            Box::new(log_lines_dropped.clone()),
            Box::new(ready.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector");

        // Pre-create the bounded label sets so dashboards see zeros rather than gaps.
        let decision_children = crate::decision::Reason::ALL
            .iter()
            .map(|r| decisions.with_label_values(&[decision_label(*r), r.as_str()]))
            .collect();
        for r in ["hit", "miss"] {
            token_cache_requests.with_label_values(&[r]);
        }
        for r in ["success", "failure"] {
            config_reloads.with_label_values(&[r]);
        }
        for r in PAYLOAD_RESULTS {
            payload_checks.with_label_values(&[r]);
        }

        Metrics {
            registry,
            decisions,
            decision_duration,
            spop_connections,
            spop_frames,
            spop_connection_errors,
            spop_connections_evicted,
            spop_listener,
            admin_connections_evicted,
            token_cache_requests,
            jwks_refresh,
            introspection_requests,
            introspection_cache_requests,
            jwks_keys,
            jwks_last_success,
            upstream_token_requests,
            upstream_token_duration,
            config_reloads,
            payload_checks,
            build_info,
            log_lines_dropped,
            decision_children,
            ready,
        }
    }

    /// Count one decision (`idgate_decisions_total{decision,reason}`) without label lookups.
    pub fn count_decision(&self, allow: bool, reason: crate::decision::Reason) {
        // `Reason::ALL` lists the variants in declaration order (tested in decision.rs). The
        // decision follows from the reason (only `ok` and `public` allow).
        debug_assert_eq!(allow, decision_label(reason) == "allow", "{reason:?}");
        self.decision_children[reason as usize].inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        for (stream, dropped) in crate::telemetry::dropped_lines() {
            let c = self.log_lines_dropped.with_label_values(&[stream]);
            c.inc_by(dropped.saturating_sub(c.get()));
        }
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// The `result` labels of `idgate_payload_checks_total`.
pub const PAYLOAD_RESULTS: [&str; 6] = [
    "valid",
    "invalid",
    "too_large",
    "unchecked",
    "schema_unavailable",
    "schema_stale",
];

/// The `decision` label a reason always comes with.
fn decision_label(r: crate::decision::Reason) -> &'static str {
    if r.status() == 200 {
        "allow"
    } else {
        "deny"
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    #[test]
    fn decision_series_exist_only_for_the_decision_their_reason_takes() {
        let text = super::metrics().render();
        for r in crate::decision::Reason::ALL {
            let (yes, no) = if r.status() == 200 {
                ("allow", "deny")
            } else {
                ("deny", "allow")
            };
            let series = |d: &str| format!("decision=\"{d}\",reason=\"{}\"", r.as_str());
            assert!(text.contains(&series(yes)), "{} missing", series(yes));
            assert!(
                !text.contains(&series(no)),
                "{} can never count",
                series(no)
            );
        }
    }

    #[test]
    fn contract_names_are_exported() {
        let m = super::metrics();
        m.spop_frames.with_label_values(&["notify"]).inc();
        m.jwks_refresh.with_label_values(&["corp", "success"]).inc();
        m.upstream_token_requests
            .with_label_values(&["sp", "success"])
            .inc();
        m.decision_duration.observe(0.00001);
        let text = m.render();
        for name in [
            "idgate_decisions_total",
            "idgate_decision_duration_seconds_bucket",
            "idgate_spop_connections",
            "idgate_spop_frames_total",
            "idgate_token_cache_requests_total",
            "idgate_jwks_refresh_total",
            "idgate_upstream_token_requests_total",
            "idgate_config_reloads_total",
            "idgate_build_info",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from /metrics");
        }
    }
}
