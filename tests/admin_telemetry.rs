//! `telemetry::init` end to end: the global subscriber writes audit lines to a file, in JSON,
//! independently of the log level. One test function: a process has one global subscriber.

use std::sync::Arc;
use std::time::Duration;

use idgate::decision::{AuthzRequest, Identity, Reason, Verdict};
use idgate::telemetry::{self, LogFormat, TelemetryError};

#[test]
fn init_writes_audit_lines_to_a_file_whatever_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let audit = audit.to_str().unwrap();

    // Invalid input fails before anything is installed...
    let bad = telemetry::init(LogFormat::Json, "info,idgate=shouty", audit);
    let rust_log_set = std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty());
    if !rust_log_set {
        assert!(
            matches!(bad, Err(TelemetryError::Filter { .. })),
            "{:?}",
            bad.err()
        );
    }
    let missing_dir = dir.path().join("no/such/dir/audit.log");
    assert!(matches!(
        telemetry::init(LogFormat::Json, "warn", missing_dir.to_str().unwrap()),
        Err(TelemetryError::AuditFile { .. })
    ));

    // ...so a correct call still succeeds. Level `error`: audit must not depend on it.
    let guard = telemetry::init(LogFormat::Text, "error", audit).expect("init");
    assert!(matches!(
        telemetry::init(LogFormat::Json, "info", "off"),
        Err(TelemetryError::AlreadyInitialized)
    ));
    assert_eq!(guard.set_level("warn").unwrap(), !rust_log_set);
    assert!(guard.set_level("warn,idgate=chatty").is_err() || rust_log_set);

    let req = AuthzRequest {
        method: Some("GET".into()),
        path: Some("/api/2.0/clusters/list".into()),
        authorization: Some("Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln".into()),
        ..Default::default()
    };
    let mut allowed = Verdict::allow(Reason::Ok);
    allowed.identity = Some(Arc::new(Identity {
        issuer: "corp".into(),
        sub: "alice".into(),
        user: None,
        email: None,
        groups: vec![],
        scopes: vec![],
        expires_at: 0,
        issued_at: None,
        jti: None,
        claims: Default::default(),
    }));
    allowed.upstream_authorization = Some("Bearer dapi-secret".into());
    telemetry::audit_decision(&req, &allowed, Duration::from_micros(42));
    telemetry::audit_decision(
        &req,
        &Verdict::deny(Reason::Expired),
        Duration::from_micros(7),
    );
    tracing::error!(target: "idgate::test", "a diagnostic line goes to stderr, not the audit file");
    drop(guard); // flushes the writer threads

    let text = std::fs::read_to_string(audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["sub"], "alice");
    assert_eq!(lines[0]["allow"], true);
    assert_eq!(lines[0]["latency_us"], 42);
    assert_eq!(lines[1]["reason"], "expired");
    assert_eq!(lines[1]["status"], 401);
    assert!(!text.contains("eyJ") && !text.contains("dapi"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(audit).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "audit log not world-readable: {mode:o}");
    }
}
