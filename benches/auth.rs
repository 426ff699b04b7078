//! Token validation cost: the raw `jsonwebtoken` signature check, the full cold path (first-seen
//! token: every check of src/auth plus the cache miss and insert) and the cached path, in one
//! run so the ratios are meaningful.
//!
//! Targets: cold RS256 within 1.3x of the raw RS256 signature check; cached under 2 µs.
//!
//! `authenticate` is async but never suspends once keys are loaded, so each call is polled
//! once with a no-op waker: the figures exclude any executor overhead.
//!
//! Run: `cargo bench --bench auth` (a summary with the ratios is printed at the end).

#[path = "../tests/support/auth_kit.rs"]
mod kit;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use idgate::auth::Authenticator;
use idgate::config::Config;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use kit::{MockIdp, Signer};
use serde_json::json;

/// Distinct tokens per algorithm for the cold path (each is validated once per fresh cache).
const COLD_TOKENS: usize = 256;

/// Poll a future that must complete without suspending.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("authenticate suspended: keys not loaded?"),
    }
}

/// Claims shaped like a real access token (~1 KiB once signed with RS256).
fn realistic_claims(iss: &str, i: usize) -> serde_json::Value {
    let n = kit::now();
    json!({
        "iss": iss, "sub": format!("user-{i}@example.com"), "aud": ["api", "https://haproxy.local"],
        "exp": n + 3600, "iat": n, "nbf": n, "jti": format!("jti-{i}-{n}"),
        "client_id": "bench-client", "scope": "openid profile email read write",
        "email": format!("user-{i}@example.com"), "name": "Bench User",
        "groups": ["ml-engineers", "analysts", "data-platform", "oncall", "readers",
                   "writers", "admins-sandbox", "feature-store", "vector-search", "genie"],
    })
}

struct Fixture {
    _rt: tokio::runtime::Runtime,
    _idp: MockIdp,
    cfg: Config,
    base: Authenticator,
    signers: Vec<Signer>,
    /// Per algorithm: COLD_TOKENS distinct tokens.
    tokens: Vec<Vec<String>>,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let signers = vec![Signer::rsa("rsa-1"), Signer::ec("ec-1"), Signer::ed("ed-1")];
    let (idp, cfg, base) = rt.block_on(async {
        let refs: Vec<&Signer> = signers.iter().collect();
        let idp = MockIdp::start(&refs).await;
        let cfg = kit::config("bench", &idp, false, "");
        let base = kit::ready_auth(&cfg).await;
        (idp, cfg, base)
    });
    let tokens = signers
        .iter()
        .map(|s| {
            (0..COLD_TOKENS)
                .map(|i| s.token(&realistic_claims(&idp.base, i)))
                .collect()
        })
        .collect();
    Fixture {
        _rt: rt,
        _idp: idp,
        cfg,
        base,
        signers,
        tokens,
    }
}

/// An authenticator sharing `base`'s loaded keys but with an empty token cache (a cache size
/// other than `base`'s forces a new cache; issuers with unchanged config are shared on reload).
fn fresh_cache(f: &Fixture) -> Authenticator {
    let mut cfg = f.cfg.clone();
    cfg.auth.token_cache_size = f.cfg.auth.token_cache_size + 1;
    let _guard = f._rt.enter();
    let a = Authenticator::new(&cfg, Some(&f.base), kit::http());
    assert!(a.ready() && !a.shares_cache_with(&f.base));
    a
}

/// The DecodingKey exactly as a JWKS fetch builds it, plus one token split for `verify`.
fn raw_parts(s: &Signer, token: &str) -> (DecodingKey, String, String) {
    let jwk: Jwk = serde_json::from_value(s.jwk.clone()).expect("jwk");
    let key = DecodingKey::from_jwk(&jwk).expect("decoding key");
    let (message, sig) = token.rsplit_once('.').expect("jws");
    (key, message.to_string(), sig.to_string())
}

/// Time `n` cold validations (fresh caches, distinct tokens); returns the mean per token.
fn cold_mean(f: &Fixture, alg: usize, n: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < n {
        let a = fresh_cache(f);
        let chunk = (n - done).min(COLD_TOKENS as u64) as usize;
        let start = Instant::now();
        for t in &f.tokens[alg][..chunk] {
            black_box(now_or_never(a.authenticate(black_box(t))).expect("valid"));
        }
        total += start.elapsed();
        done += chunk as u64;
        drop(a);
    }
    total / u32::try_from(n).unwrap_or(u32::MAX)
}

fn benches(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("auth");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (i, s) in f.signers.iter().enumerate() {
        let name = s.alg_name();
        // The same tokens as the cold path, in turn: ECDSA and EdDSA verification times vary
        // with the signature, so one token alone would not be a fair baseline.
        let parts: Vec<_> = f.tokens[i].iter().map(|t| raw_parts(s, t)).collect();
        let mut next = parts.iter().cycle();
        g.bench_function(BenchmarkId::new("raw_signature_check", name), |b| {
            b.iter(|| {
                let (key, msg, sig) = next.next().expect("cycle");
                jsonwebtoken::crypto::verify(black_box(sig), msg.as_bytes(), key, s.alg)
                    .expect("verify")
            })
        });
        g.bench_function(BenchmarkId::new("cold_first_seen", name), |b| {
            b.iter_custom(|iters| cold_mean(f, i, iters) * iters as u32)
        });
    }
    let hot = &f.tokens[0][0];
    now_or_never(f.base.authenticate(hot)).expect("valid");
    g.bench_function("cached_hit/RS256", |b| {
        b.iter(|| now_or_never(f.base.authenticate(black_box(hot))).expect("valid"))
    });
    g.finish();
}

/// Independent figures for the report. The machine is shared, so raw and cold are measured
/// interleaved token by token (raw check of token i, then full validation of token i) and
/// compared by their medians: load that comes and goes hits both alike.
fn summary(f: &Fixture) {
    println!("\nsummary (medians of interleaved single calls; ratio = cold / raw signature check)");
    for (i, s) in f.signers.iter().enumerate() {
        let parts: Vec<_> = f.tokens[i].iter().map(|t| raw_parts(s, t)).collect();
        let (mut raw, mut cold) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            let a = fresh_cache(f);
            for (t, (key, msg, sig)) in f.tokens[i].iter().zip(&parts) {
                let t0 = Instant::now();
                let ok = jsonwebtoken::crypto::verify(black_box(sig), msg.as_bytes(), key, s.alg);
                let t1 = Instant::now();
                black_box(now_or_never(a.authenticate(black_box(t))).expect("valid"));
                let t2 = Instant::now();
                assert!(matches!(ok, Ok(true)));
                raw.push(t1 - t0);
                cold.push(t2 - t1);
            }
        }
        let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
        let (raw_mean, cold_mean) = (mean(&raw), mean(&cold));
        let (raw_p99, cold_p99) = (pct(&mut raw, 99), pct(&mut cold, 99));
        let (raw, cold) = (median(&mut raw), median(&mut cold));
        println!(
            "  {:<6} raw {:>8.2?}  cold {:>8.2?}  ratio {:.3}   (means {:.2?} / {:.2?}: {:.3}; p99 {:.2?} / {:.2?})",
            s.alg_name(),
            raw,
            cold,
            cold.as_secs_f64() / raw.as_secs_f64(),
            raw_mean,
            cold_mean,
            cold_mean.as_secs_f64() / raw_mean.as_secs_f64(),
            raw_p99,
            cold_p99,
        );
    }
    let hot = &f.tokens[0][0];
    let mut per_batch = Vec::new();
    for _ in 0..50 {
        let n = 2_000u32;
        let start = Instant::now();
        for _ in 0..n {
            black_box(now_or_never(f.base.authenticate(black_box(hot))).expect("valid"));
        }
        per_batch.push(start.elapsed() / n);
    }
    println!(
        "  cached hit ({} byte RS256 token): median {:.2?}, best {:.2?}",
        hot.len(),
        median(&mut per_batch.clone()),
        per_batch.iter().min().copied().unwrap_or_default()
    );
}

fn median(v: &mut [Duration]) -> Duration {
    pct(v, 50)
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort_unstable();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn main() {
    let f = fixture();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &f);
    c.final_summary();
    // IDGATE_BENCH_NO_SUMMARY=1: criterion only (e.g. under a profiler with --profile-time).
    if std::env::var_os("IDGATE_BENCH_NO_SUMMARY").is_none() {
        summary(&f);
    }
}
