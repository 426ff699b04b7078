//! Client load through HAProxy for the fault-injection tests, and the check that matters in
//! every fault: **no request reaches the upstream without a valid verdict**.
//!
//! Every request carries its identity in the query (`?kind=good|bad&n=<id>`), which the echo
//! upstream records, so each forwarded request can be matched with what its client saw:
//!
//! - a `bad` request (no or an invalid token) is never forwarded;
//! - a request answered 200 was forwarded exactly once;
//! - a request answered anything else (401, 403, 503...) was not forwarded at all.
//!
//! A request whose client saw a transport error (no response) may or may not have been
//! forwarded; such requests are counted and reported, not matched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::echo::EchoServer;
use super::http_client;

/// One request and what its client saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: u64,
    pub good: bool,
    /// `None`: transport error (no HTTP response).
    pub status: Option<u16>,
    /// When the answer (or error) came.
    pub at: Instant,
}

/// What to send for request `n`: (path without query, Authorization value, good?).
pub type MakeRequest = dyn Fn(u64) -> (String, Option<String>, bool) + Send + Sync;

/// Client threads sending requests back to back until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `threads` clients against `base` (`http://frontend`), each request built by `make`.
    pub fn start(base: String, threads: usize, make: Arc<MakeRequest>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(1));
        let threads = (0..threads)
            .map(|_| {
                let (stop, results, next, make, base) = (
                    stop.clone(),
                    results.clone(),
                    next.clone(),
                    make.clone(),
                    base.clone(),
                );
                std::thread::spawn(move || {
                    let client = http_client();
                    while !stop.load(Ordering::Relaxed) {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        let (path, auth, good) = make(id);
                        let kind = if good { "good" } else { "bad" };
                        let mut req = client.get(format!("{base}{path}?kind={kind}&n={id}"));
                        if let Some(a) = auth {
                            req = req.header("Authorization", a);
                        }
                        let status = req.send().ok().map(|r| {
                            let s = r.status().as_u16();
                            let _ = r.bytes();
                            s
                        });
                        results.lock().unwrap().push(Outcome {
                            id,
                            good,
                            status,
                            at: Instant::now(),
                        });
                    }
                })
            })
            .collect();
        Load {
            stop,
            results,
            threads,
        }
    }

    /// Requests answered so far.
    pub fn completed(&self) -> usize {
        self.results.lock().unwrap().len()
    }

    /// Outcomes answered after `t`.
    pub fn since(&self, t: Instant) -> Vec<Outcome> {
        self.results
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.at > t)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` more requests have been answered; false after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let from = self.completed();
        super::poll_until(timeout, || (self.completed() >= from + n).then_some(())).is_some()
    }

    /// Waits until `pred` holds for `n` consecutive answers received after now; false after
    /// `timeout`. E.g. "traffic recovered": the next 20 good requests are all 200.
    pub fn wait_for_run(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Outcome) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut from = Instant::now();
        loop {
            let recent = self.since(from);
            if let Some(bad) = recent.iter().rposition(|o| !pred(o)) {
                from = recent[bad].at;
            } else if recent.len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(super::POLL_INTERVAL);
        }
    }

    /// Stops the clients and returns every outcome.
    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("client thread panicked");
        }
        Arc::try_unwrap(self.results)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|a| a.lock().unwrap().clone())
    }
}

/// Status counts by kind, for messages: `{"good 200": 812, "good 503": 37, ...}`.
pub fn summary(outcomes: &[Outcome]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for o in outcomes {
        let kind = if o.good { "good" } else { "bad" };
        let st = o
            .status
            .map_or_else(|| "error".to_string(), |s| s.to_string());
        *m.entry(format!("{kind} {st}")).or_default() += 1;
    }
    m
}

/// The fail-closed check (module docs). Returns the number of forwarded requests.
pub fn assert_only_allowed_forwarded(
    outcomes: &[Outcome],
    echo: &EchoServer,
    context: &str,
) -> usize {
    let mut forwarded: HashMap<u64, usize> = HashMap::new();
    for r in echo.requests() {
        let query = r.path.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut kind = None;
        let mut n = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("kind", k)) => kind = Some(k.to_string()),
                Some(("n", v)) => n = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        assert_eq!(
            kind.as_deref(),
            Some("good"),
            "a refused-kind request reached the upstream: {} ({context})",
            r.path
        );
        *forwarded.entry(n.expect("request id")).or_default() += 1;
    }
    let by_id: HashMap<u64, &Outcome> = outcomes.iter().map(|o| (o.id, o)).collect();
    for (id, count) in &forwarded {
        assert_eq!(
            *count, 1,
            "request {id} forwarded {count} times ({context})"
        );
        if let Some(o) = by_id.get(id) {
            assert!(
                matches!(o.status, Some(200) | None),
                "request {id} was forwarded but its client got {:?} ({context})",
                o.status
            );
        }
    }
    for o in outcomes {
        if o.status == Some(200) {
            assert!(
                forwarded.contains_key(&o.id),
                "request {} answered 200 without reaching the upstream ({context})",
                o.id
            );
            assert!(o.good, "request {} (bad) answered 200 ({context})", o.id);
        }
    }
    forwarded.len()
}
