//! Policy evaluation cost with a large rule set: 200 rules where the match is the last one
//! (every rule before it is tried and rejected), a request no rule matches, public-rule lookup,
//! and path normalization.
//!
//! Run: `cargo bench --bench policy`. Report: ns per evaluation (criterion's `time`).

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use idgate::config::Config;
use idgate::decision::Identity;
use idgate::policy::{normalize_path, Outcome, Policy, RequestView};

const RULES: usize = 200;

/// 199 realistic rules that the benchmark request does not match (mixing methods, globs,
/// hosts and identity conditions so each rejection costs what it would in production), then
/// the rule that matches.
fn config() -> Config {
    let mut t = String::from(
        "[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"gw\"]\n",
    );
    for i in 0..RULES - 1 {
        let _ = write!(t, "\n[[rule]]\nname = \"r{i}\"\n");
        match i % 4 {
            0 => {
                let _ = writeln!(t, "methods = [\"POST\"]\npaths = [\"/serving-endpoints/ep{i}/invocations\"]\ngroups = [\"team{i}\"]");
            }
            1 => {
                let _ = writeln!(t, "methods = [\"GET\", \"HEAD\"]\npaths = [\"/api/2.*/family{i}/**\"]\ngroups = [\"analysts\"]");
            }
            2 => {
                let _ = writeln!(t, "paths = [\"/api/2.0/svc{i}/*/items\", \"/**/x{i}\"]\nhosts = [\"*.h{i}.example.com\"]");
            }
            _ => {
                let _ = writeln!(t, "paths = [\"/api/2.0/jobs/**\"]\nemail_domains = [\"d{i}.example.com\"]\nclaims = {{ tier = \"t{i}\" }}");
            }
        }
    }
    t.push_str(
        "\n[[rule]]\nname = \"target\"\nmethods = [\"POST\"]\npaths = [\"/serving-endpoints/*/invocations\"]\nhosts = [\"dbc.example.com\"]\ngroups = [\"ml-engineers\"]\nclaims = { tier = \"gold\" }\n",
    );
    Config::from_toml(&t, "bench").expect("bench config parses")
}

fn identity() -> Identity {
    Identity {
        issuer: "corp".into(),
        sub: "user-1".into(),
        user: None,
        email: Some("ana@example.com".into()),
        groups: (0..20)
            .map(|i| format!("group-{i}"))
            .chain(["ml-engineers".to_string()])
            .collect(),
        scopes: vec!["openid".into()],
        expires_at: 0,
        issued_at: None,
        jti: None,
        claims: serde_json::from_str(r#"{"tier": "gold"}"#).unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let policy = Policy::compile(&config());
    assert_eq!(policy.rules().len(), RULES);
    let id = identity();
    let hit = RequestView {
        method: "POST",
        path: "/serving-endpoints/churn-model/invocations",
        host: Some("dbc.example.com"),
        src: Some("10.1.2.3".parse().unwrap()),
    };
    let miss = RequestView {
        method: "POST",
        path: "/api/2.0/jobs/runs/submit",
        ..hit
    };
    assert!(matches!(policy.evaluate(&hit, &id), Outcome::Allow(r) if &*r.name == "target"));
    assert!(matches!(policy.evaluate(&miss, &id), Outcome::NoMatch));

    let mut g = c.benchmark_group("policy_200_rules");
    g.bench_function("match_last_rule", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&hit), black_box(&id))))
    });
    g.bench_function("no_match", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&miss), black_box(&id))))
    });
    g.bench_function("match_public_none", |b| {
        b.iter(|| black_box(policy.match_public(black_box(&hit))))
    });
    g.finish();

    let mut g = c.benchmark_group("normalize_path");
    g.bench_function("plain", |b| {
        b.iter(|| {
            black_box(normalize_path(black_box(
                "/serving-endpoints/churn-model/invocations",
            )))
        })
    });
    g.bench_function("encoded", |b| {
        b.iter(|| {
            black_box(normalize_path(black_box(
                "/api/2.0/workspace/my%20notebook/q%26a%40v1",
            )))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
