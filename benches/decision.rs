//! The decision path without the network: what idgate spends per NOTIFY between
//! `contract::request_from_messages` and `contract::render`.
//!
//! | group / case | what |
//! |---|---|
//! | `decision/cached_token` | `Engine::authorize` (what the SPOP server calls): token in the validated-token cache, first-match allow rule, no upstream |
//! | `decision/cached_token_cached_upstream` | the same with a rule whose `client_credentials` upstream credential is cached (target: within 10% of `cached_token`) |
//! | `decision/cached_token_cached_exchange` | the same with a `token_exchange` upstream: the caller's exchanged token, cached under the token key the authenticator already computed |
//! | `decision/cold/{RS256,ES256,EdDSA}` | token cache off: parse, key lookup, signature and claim checks on every call |
//! | `decision/token_key/N_bytes` | SHA-256 of the token (the cache key), the part of a cached lookup that grows with the token |
//!
//! Not duplicated here: the token-cache hit alone and the raw signature checks
//! (benches/auth.rs), policy evaluation with 200 rules (benches/policy.rs), the cached upstream
//! credential alone (benches/upstream.rs), the SPOP codec (benches/spop.rs).
//!
//! Run: `cargo bench --bench decision`. The mock IdP and the fake Databricks token endpoint
//! (tests/support) serve the keys and the two credential requests during setup; every
//! benchmarked call completes on its first poll (checked), so no executor hop is measured.

#[path = "../tests/support/mod.rs"]
mod support;
use support::{auth_kit, databricks};

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use auth_kit::{claims, MockIdp, Signer};
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, Criterion};
use databricks::{FakeDatabricks, CLIENT_ID, CLIENT_SECRET};
use idgate::config::Config;
use idgate::decision::{Authorizer, AuthzRequest, Reason, Verdict};
use idgate::engine::Engine;

/// Poll once with a no-op waker and insist on completion: a decision that would wait for
/// the network would not be measuring the hot path.
fn ready<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the benchmarked call did not complete on its first poll"),
    }
}

fn request(path: &str, token: &str) -> AuthzRequest {
    AuthzRequest {
        method: Some(ByteString::from_static("GET")),
        path: Some(ByteString::from(path)),
        host: Some(ByteString::from_static("bench.local")),
        authorization: Some(ByteString::from(format!("Bearer {token}"))),
        cookie: None,
        src: Some([127, 0, 0, 1].into()),
        unique_id: Some(ByteString::from_static(
            "7F000001:C350_7F000001:1F90_6650A1B2_0001:1A2B",
        )),
        ..AuthzRequest::default()
    }
}

struct Setup {
    rt: tokio::runtime::Runtime,
    _idp: MockIdp,
    _fake: FakeDatabricks,
    _dir: tempfile::TempDir,
    cached: Engine,
    cold: Engine,
    rs: Signer,
    es: Signer,
    ed: Signer,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (rs, es, ed) = (Signer::rsa("rs"), Signer::ec("es"), Signer::ed("ed"));
    let idp = rt.block_on(MockIdp::start(&[&rs, &es, &ed]));
    let fake = rt.block_on(FakeDatabricks::start());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sp.secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let engine = |cache_size: u64| {
        let text = format!(
            r#"
[auth]
token_cache_size = {cache_size}

[[issuer]]
name = "bench"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["api"]
algorithms = ["RS256", "ES256", "EdDSA"]

[upstream.sp]
kind = "client_credentials"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"

[upstream.fed]
kind = "token_exchange"
token_url = "{token_url}"
scope = "all-apis"

[[rule]]
name = "plain"
paths = ["/plain/**"]
groups = ["ml-engineers"]

[[rule]]
name = "with-upstream"
paths = ["/up/**"]
groups = ["ml-engineers"]
upstream = "sp"

[[rule]]
name = "with-exchange"
paths = ["/ex/**"]
groups = ["ml-engineers"]
upstream = "fed"
"#,
            iss = idp.base,
            jwks = idp.jwks_uri(),
            token_url = fake.token_url,
            secret = secret.display(),
        );
        let cfg = Config::from_toml(&text, "bench").unwrap();
        let _guard = rt.enter();
        let e = Engine::new(cfg, None, auth_kit::http()).unwrap();
        assert!(rt.block_on(e.state().auth.wait_ready(Duration::from_secs(10))));
        e
    };
    let cached = engine(100_000);
    let cold = engine(0);
    Setup {
        rt,
        _idp: idp,
        _fake: fake,
        _dir: dir,
        cached,
        cold,
        rs,
        es,
        ed,
    }
}

fn assert_allowed(v: &Verdict, rule: &str, upstream: bool) {
    assert!(v.allow, "not allowed: {:?}", v.reason);
    assert_eq!(v.reason, Reason::Ok);
    assert_eq!(v.rule.as_deref(), Some(rule));
    assert_eq!(v.upstream_authorization.is_some(), upstream);
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let iss = &s._idp.base;
    let token = s.rs.token(&claims(iss));
    let plain = request("/plain/x", &token);
    let up = request("/up/x", &token);
    let ex = request("/ex/x", &token);
    // First calls: validate and cache the token, fetch and cache the upstream credentials;
    // then each case must complete on its first poll.
    for (req, rule, upstream) in [
        (&plain, "plain", false),
        (&up, "with-upstream", true),
        (&ex, "with-exchange", true),
    ] {
        assert_allowed(
            &s.rt.block_on(s.cached.authorize(req, Instant::now())),
            rule,
            upstream,
        );
        assert_allowed(
            &ready(s.cached.authorize(req, Instant::now())),
            rule,
            upstream,
        );
    }
    let requests_before = s._fake.requests();

    let mut g = c.benchmark_group("decision");
    g.bench_function("cached_token", |b| {
        b.iter(|| ready(s.cached.authorize(black_box(&plain), Instant::now())))
    });
    g.bench_function("cached_token_cached_upstream", |b| {
        b.iter(|| ready(s.cached.authorize(black_box(&up), Instant::now())))
    });
    g.bench_function("cached_token_cached_exchange", |b| {
        b.iter(|| ready(s.cached.authorize(black_box(&ex), Instant::now())))
    });
    for signer in [&s.rs, &s.es, &s.ed] {
        let req = request("/plain/x", &signer.token(&claims(iss)));
        assert_allowed(
            &ready(s.cold.authorize(&req, Instant::now())),
            "plain",
            false,
        );
        g.bench_function(format!("cold/{}", signer.alg_name()), |b| {
            b.iter(|| ready(s.cold.authorize(black_box(&req), Instant::now())))
        });
    }
    g.finish();
    assert_eq!(
        s._fake.requests(),
        requests_before,
        "the upstream credential came from the cache"
    );

    let mut g = c.benchmark_group("decision");
    g.bench_function(format!("token_key/{}_bytes", token.len()), |b| {
        b.iter(|| idgate::auth::token_key(black_box(&token)))
    });
    g.finish();

    if std::env::var_os("IDGATE_BENCH_NO_SUMMARY").is_none() {
        upstream_summary(&s, [&plain, &up, &ex]);
    }
}

/// The upstream's share, measured so that background load hits both sides alike: batches of
/// the three cached cases in turn, 200 rounds, and the median of the per-round ratios.
/// (Criterion measures each case for seconds, one after the other; on a shared VM that alone
/// moves a ~1 µs figure by ±10%.)
fn upstream_summary(s: &Setup, reqs: [&AuthzRequest; 3]) {
    const BATCH: u32 = 2_000;
    let mut ratios = [Vec::new(), Vec::new()];
    let mut plain_means = Vec::new();
    for _ in 0..200 {
        let mut means = [Duration::ZERO; 3];
        for (mean, req) in means.iter_mut().zip(reqs) {
            let start = std::time::Instant::now();
            for _ in 0..BATCH {
                black_box(ready(s.cached.authorize(black_box(req), Instant::now())));
            }
            *mean = start.elapsed() / BATCH;
        }
        plain_means.push(means[0]);
        for (r, m) in ratios.iter_mut().zip(&means[1..]) {
            r.push(m.as_secs_f64() / means[0].as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    plain_means.sort();
    println!(
        "\nsummary (medians of 200 interleaved rounds of {BATCH} calls each)\n  \
         cached_token: {:.2?}\n  \
         + cached client_credentials credential: {:+.1}%\n  \
         + cached token_exchange credential:     {:+.1}%",
        plain_means[plain_means.len() / 2],
        (median(&mut ratios[0]) - 1.0) * 100.0,
        (median(&mut ratios[1]) - 1.0) * 100.0,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
