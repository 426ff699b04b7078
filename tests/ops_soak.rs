//! Soak test (ignored by default; run by `benches/soak.sh`): minutes of mixed traffic through
//! HAProxy 2.6 into the real `idgate`, with the IdP rotating its signing key and the agent
//! reloading (SIGHUP) periodically, while idgate's memory and error counters are sampled
//! into a CSV. Fails if RSS grows more than `SOAK_MAX_GROWTH_PCT` between the end of the
//! warm-up and the end, if a well-formed request is ever refused or lost, if anything is
//! forwarded without a verdict, or if the agent reports internal errors or failed reloads.
//!
//! Environment (defaults):
//! - `SOAK_MINUTES` (10) total duration, fractions allowed (`2.5`)
//! - `SOAK_WARMUP_SECS` (max(60, a quarter of the duration)) excluded from the growth check:
//!   the token cache fills for one token lifetime ([`TOKEN_LIFETIME`]) before it is steady
//! - `SOAK_SAMPLE_SECS` (5) sampling period
//! - `SOAK_CLIENTS` (8) concurrent HTTP clients
//! - `SOAK_MAX_GROWTH_PCT` (10)
//! - `SOAK_CSV` (`target/soak/soak-<unix time>.csv`)
//!
//! Traffic mix per 20 requests: 14 valid tokens (freshly minted every 250 ms, so the token
//! cache keeps inserting and expiring), 1 no token, 1 garbage token, 1 expired token,
//! 1 unknown-issuer token, 1 path no rule allows (403), 1 path a deny rule refuses (403).

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::auth_kit::{claims, now, Signer};
use support::haproxy::HaproxyVersion;
use support::stack::{agent_config, IdpStack};
use support::traffic::{summary, Load};
use support::{metric_sum, metric_value, poll_until, READY_TIMEOUT};

/// Lifetime of the minted valid tokens: also how long the token cache takes to reach its
/// steady size.
const TOKEN_LIFETIME: u64 = 60;
/// The IdP publishes a new key, then signs with it this much later, then drops the old one.
const ROTATE_EVERY: Duration = Duration::from_secs(30);
const RELOAD_EVERY: Duration = Duration::from_secs(20);
const MINT_EVERY: Duration = Duration::from_millis(250);

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The key the IdP signs with now, and the ones it publishes.
struct Keys {
    current: Signer,
    published: Vec<Signer>,
    generation: u64,
}

fn signer(generation: u64) -> Signer {
    let file = if generation % 2 == 0 {
        "ec1.pem"
    } else {
        "ec2.pem"
    };
    Signer::new(
        file,
        jsonwebtoken::Algorithm::ES256,
        &format!("g{generation}"),
    )
}

fn config(s: &IdpStack, variant: u64) -> String {
    let deny = "[[rule]]\nname = \"no-admin\"\npaths = [\"/admin/**\"]\neffect = \"deny\"\n";
    let issuer = "unknown_kid_refetch_interval = \"1s\"";
    let mut c = if variant % 2 == 0 {
        agent_config(&s.idp, issuer, deny)
    } else {
        // Same decisions, another issuer setting: a new key store (seeded), a new cache.
        agent_config(
            &s.idp,
            &format!("{issuer}\naudiences = [\"api\", \"v{variant}\"]"),
            deny,
        )
        .replacen("audiences = [\"api\"]\n", "", 1)
    };
    c.push('\n');
    c
}

#[test]
#[ignore = "long-running soak; run benches/soak.sh"]
fn soak() {
    let minutes = env_f64("SOAK_MINUTES", 10.0);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let warmup = Duration::from_secs_f64(env_f64(
        "SOAK_WARMUP_SECS",
        (duration.as_secs_f64() / 4.0).max(60.0),
    ));
    assert!(
        warmup < duration,
        "warm-up {warmup:?} >= duration {duration:?}"
    );
    let sample_every = Duration::from_secs_f64(env_f64("SOAK_SAMPLE_SECS", 5.0));
    let clients = env_f64("SOAK_CLIENTS", 8.0) as usize;
    let max_growth = env_f64("SOAK_MAX_GROWTH_PCT", 10.0);
    let csv_path = std::env::var("SOAK_CSV").unwrap_or_else(|_| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        support::repo_path(&format!("target/soak/soak-{t}.csv"))
            .display()
            .to_string()
    });
    if let Some(dir) = std::path::Path::new(&csv_path).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }

    let s = IdpStack::start(HaproxyVersion::V26, false, "", "").expect("HAProxy 2.6 is required");
    s.agent.write_config(&config(&s, 0));
    s.agent.signal("HUP");
    let reloaded = |n: f64| {
        poll_until(READY_TIMEOUT, || {
            (s.agent
                .metric("idgate_config_reloads_total", &[("result", "success")])
                >= Some(n))
            .then_some(())
        })
        .is_some()
    };
    assert!(reloaded(1.0), "{}", s.logs());
    let pid = s.agent.pid();

    // Keys and tokens.
    let keys = Arc::new(RwLock::new(Keys {
        current: s.signer.clone(),
        published: vec![s.signer.clone()],
        generation: 0,
    }));
    let iss = s.idp.base.clone();
    let mint = {
        let keys = keys.clone();
        let iss = iss.clone();
        let jti = AtomicU64::new(0);
        move || -> Vec<String> {
            let k = keys.read().unwrap();
            (0..8)
                .map(|_| {
                    let mut c = claims(&iss);
                    let n = now();
                    c["iat"] = json!(n);
                    c["exp"] = json!(n + TOKEN_LIFETIME);
                    c["jti"] = json!(jti.fetch_add(1, Ordering::Relaxed));
                    k.current.token(&c)
                })
                .collect()
        }
    };
    let pool = Arc::new(RwLock::new(mint()));
    let stop = Arc::new(AtomicBool::new(false));
    let minter = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(MINT_EVERY);
                *pool.write().unwrap() = mint();
            }
        })
    };
    let expired = {
        let mut c = claims(&iss);
        c["iat"] = json!(now() - 7200);
        c["exp"] = json!(now() - 3600);
        s.signer.token(&c)
    };
    let foreign = Signer::ec("k0").token(&claims("https://other-idp.example.com"));
    let load = {
        let pool = pool.clone();
        Load::start(
            s.hap.url(""),
            clients,
            Arc::new(move |n| {
                let ok = "/api/2.0/clusters/list".to_string();
                let bearer = |t: &str| Some(format!("Bearer {t}"));
                match n % 20 {
                    0 => (ok, None, false),
                    1 => (ok, Some("Bearer garbage".into()), false),
                    2 => (ok, bearer(&expired), false),
                    3 => (ok, bearer(&foreign), false),
                    4 | 5 => {
                        let path = if n % 20 == 4 {
                            "/other/x"
                        } else {
                            "/admin/users"
                        };
                        let t = pool.read().unwrap()[0].clone();
                        (path.to_string(), bearer(&t), false)
                    }
                    i => {
                        let p = pool.read().unwrap();
                        let t = p[i as usize % p.len()].clone();
                        (ok, bearer(&t), true)
                    }
                }
            }),
        )
    };

    let mut csv = std::fs::File::create(&csv_path).unwrap();
    writeln!(
        csv,
        "elapsed_s,rss_kb,open_fds,requests,ok_200,unauth_401,forbidden_403,unavailable_503,\
         client_errors,decisions_allow,decisions_deny,internal_errors,spop_connection_errors,\
         jwks_failures,reloads_ok,reloads_failed,key_generation"
    )
    .unwrap();
    let started = Instant::now();
    let (mut next_rotate, mut next_reload) = (ROTATE_EVERY, RELOAD_EVERY);
    let mut rotate_phase = 0; // 0: publish next, 1: sign with it, 2: drop the old one
    let mut reloads = 1u64;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < duration {
        let t = started.elapsed();
        if t >= next_rotate {
            let mut k = keys.write().unwrap();
            match rotate_phase {
                0 => {
                    let next = signer(k.generation + 1);
                    k.published.push(next);
                    let refs: Vec<&Signer> = k.published.iter().collect();
                    s.idp.set_keys(&refs);
                }
                1 => {
                    k.generation += 1;
                    k.current = k.published.last().unwrap().clone();
                }
                _ => {
                    let keep = k.published.len() - 1;
                    k.published.drain(..keep);
                    let refs: Vec<&Signer> = k.published.iter().collect();
                    s.idp.set_keys(&refs);
                }
            }
            rotate_phase = (rotate_phase + 1) % 3;
            // Publish, then sign 5 s later, then drop the old key once its tokens expired.
            next_rotate += match rotate_phase {
                1 => Duration::from_secs(5),
                2 => Duration::from_secs(TOKEN_LIFETIME + 5),
                _ => ROTATE_EVERY,
            };
        }
        if t >= next_reload {
            s.agent.write_config(&config(&s, reloads));
            s.agent.signal("HUP");
            reloads += 1;
            assert!(reloaded(reloads as f64), "reload {reloads}\n{}", s.logs());
            next_reload += RELOAD_EVERY;
        }
        if t >= next_sample {
            let rss = rss_kb(pid);
            let m = s.agent.metrics();
            let outcomes = load.since(started - Duration::from_secs(1));
            let count = |st: Option<u16>| outcomes.iter().filter(|o| o.status == st).count();
            let v = |name: &str, labels: &[(&str, &str)]| metric_sum(&m, name, labels);
            writeln!(
                csv,
                "{:.1},{rss},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                t.as_secs_f64(),
                metric_value(&m, "process_open_fds", &[]).unwrap_or(0.0),
                outcomes.len(),
                count(Some(200)),
                count(Some(401)),
                count(Some(403)),
                count(Some(503)),
                count(None),
                v("idgate_decisions_total", &[("decision", "allow")]),
                v("idgate_decisions_total", &[("decision", "deny")]),
                v("idgate_decisions_total", &[("reason", "internal_error")]),
                v("idgate_spop_connection_errors_total", &[]),
                v("idgate_jwks_refresh_total", &[("result", "failure")]),
                v("idgate_config_reloads_total", &[("result", "success")]),
                v("idgate_config_reloads_total", &[("result", "failure")]),
                keys.read().unwrap().generation,
            )
            .unwrap();
            csv.flush().unwrap();
            samples.push((t.as_secs_f64(), rss));
            next_sample += sample_every;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.stop();
    minter.join().unwrap();
    let elapsed = started.elapsed();

    let m = s.agent.metrics();
    let internal = metric_sum(
        &m,
        "idgate_decisions_total",
        &[("reason", "internal_error")],
    );
    let reload_failures = metric_sum(&m, "idgate_config_reloads_total", &[("result", "failure")]);
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= warmup.as_secs_f64())
        .copied()
        .expect("a sample after the warm-up");
    let end = *samples.last().unwrap();
    let max = samples.iter().map(|s| s.1).max().unwrap();
    let growth = (end.1 as f64 - warm.1 as f64) * 100.0 / warm.1 as f64;
    let sum = summary(&outcomes);
    println!();
    println!(
        "soak: {:.0} s (warm-up {:.0} s), {} requests ({:.0}/s) through HAProxy 2.6, {} reloads, \
         {} key generations",
        elapsed.as_secs_f64(),
        warmup.as_secs_f64(),
        outcomes.len(),
        outcomes.len() as f64 / elapsed.as_secs_f64(),
        reloads,
        keys.read().unwrap().generation
    );
    println!("soak: outcomes {sum:?}");
    println!(
        "soak: idgate RSS at warm-up end ({:.0} s) {} KiB, at end {} KiB ({growth:+.1}%), max {} KiB",
        warm.0, warm.1, end.1, max
    );
    println!("soak: CSV {csv_path}");

    let refused_good = outcomes
        .iter()
        .filter(|o| o.good && o.status != Some(200))
        .count();
    let wrong_bad = outcomes
        .iter()
        .filter(|o| !o.good && !matches!(o.status, Some(401 | 403)))
        .count();
    assert_eq!(refused_good, 0, "valid requests not served: {sum:?}");
    assert_eq!(wrong_bad, 0, "invalid requests not refused: {sum:?}");
    assert_eq!(
        s.echo.count(),
        outcomes.iter().filter(|o| o.status == Some(200)).count(),
        "forwarded requests != allowed responses"
    );
    assert_eq!(internal, 0.0, "internal_error decisions");
    assert_eq!(reload_failures, 0.0, "failed reloads");
    assert!(
        growth <= max_growth,
        "idgate RSS grew {growth:.1}% after the warm-up (limit {max_growth}%): see {csv_path}"
    );
}
