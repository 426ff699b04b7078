//! Cached upstream credential latency: what a decision pays for `upstream_authorization` once
//! the token is in the cache (the steady state; a token request happens only at start and in
//! the background before expiry).
//!
//! Run: `cargo bench --bench upstream`. The fake Databricks endpoint (tests/support) serves
//! the one token request each case needs during setup.

#[path = "../tests/support/mod.rs"]
mod support;
use support::databricks;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use databricks::{FakeDatabricks, CLIENT_ID, CLIENT_SECRET};
use idgate::config::Config;
use idgate::upstream::Broker;

/// Poll a future once with a no-op waker: a cached credential completes on the first poll, so
/// this measures the lookup itself rather than an executor round trip. Falls back to the
/// runtime if the future is not ready (it then measures that too, visibly slower).
fn now_or_block<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => rt.block_on(fut),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(FakeDatabricks::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sp.secret"), CLIENT_SECRET).unwrap();
    std::fs::write(
        dir.path().join("pat"),
        "dapi0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    let text = format!(
        r#"
[upstream.sp]
kind = "client_credentials"
token_url = "{url}"
client_id = "{CLIENT_ID}"
client_secret_file = "sp.secret"

[upstream.fed]
kind = "token_exchange"
token_url = "{url}"

[upstream.pat]
kind = "static"
token_file = "pat"
"#,
        url = fake.token_url
    );
    let cfg = Config::from_toml_in(&text, "bench", dir.path()).unwrap();
    let broker = Broker::new(&cfg, None, reqwest::Client::new()).unwrap();
    // A caller JWT of a typical size (~1 KB): token_exchange hashes it for the cache key.
    let caller = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "x".repeat(1000));
    rt.block_on(async {
        broker.credential("sp", None, None).await.unwrap();
        broker.credential("fed", Some(&caller), None).await.unwrap();
    });
    assert_eq!(fake.requests(), 2);

    let mut g = c.benchmark_group("upstream_credential_cached");
    g.bench_function("client_credentials", |b| {
        b.iter(|| now_or_block(&rt, broker.credential(black_box("sp"), None, None)).unwrap())
    });
    g.bench_function("client_credentials_block_on", |b| {
        b.iter(|| {
            rt.block_on(broker.credential(black_box("sp"), None, None))
                .unwrap()
        })
    });
    g.bench_function("token_exchange_1kb_caller_token", |b| {
        b.iter(|| {
            now_or_block(
                &rt,
                broker.credential("fed", Some(black_box(&caller)), None),
            )
            .unwrap()
        })
    });
    g.bench_function("static", |b| {
        b.iter(|| now_or_block(&rt, broker.credential(black_box("pat"), None, None)).unwrap())
    });
    // Reference points for reading the numbers above on this machine: the clock read and the
    // Arc clone that a cached client_credentials lookup does.
    g.bench_function("reference_instant_now", |b| b.iter(std::time::Instant::now));
    let arc: std::sync::Arc<str> = std::sync::Arc::from("Bearer x");
    g.bench_function("reference_arc_clone", |b| {
        b.iter(|| std::sync::Arc::clone(black_box(&arc)))
    });
    g.finish();
    assert_eq!(
        fake.requests(),
        2,
        "every benchmarked call was served from the cache"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
