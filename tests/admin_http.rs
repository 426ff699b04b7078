//! The admin HTTP endpoint over a real socket: /live, /ready, /metrics (validated by a strict
//! Prometheus text-format parser), 404/405, header read timeout, connection cap (eviction of the
//! idle-longest connection; a busy one is waited for), shutdown.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idgate::metrics::admin::{serve_admin, serve_admin_with, AdminOptions, Readiness};
use idgate::metrics::metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for anything that should happen "at once" on loopback.
const PROMPTLY: Duration = Duration::from_secs(5);

struct Admin {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Admin {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PROMPTLY, self.task)
            .await
            .expect("admin server stops promptly")
            .expect("admin task did not panic")
            .expect("admin server returned Ok");
    }
}

async fn start<F, R>(check: F, options: Option<AdminOptions>) -> Admin
where
    F: Fn() -> R + Send + Sync + 'static,
    R: Into<Readiness>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let task = match options {
        None => tokio::spawn(serve_admin(listener, check, shutdown)),
        Some(o) => tokio::spawn(serve_admin_with(listener, check, shutdown, o)),
    };
    Admin {
        addr,
        stop: Some(tx),
        task,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PROMPTLY)
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test]
async fn live_ready_metrics_and_unknown_paths() {
    let spop_up = Arc::new(AtomicBool::new(false));
    let keys_loaded = Arc::new(AtomicBool::new(false));
    let (s, k) = (Arc::clone(&spop_up), Arc::clone(&keys_loaded));
    let admin = start(
        move || {
            let mut r = Readiness::ready();
            if !s.load(Ordering::SeqCst) {
                r.missing("spop listener not up");
            }
            if !k.load(Ordering::SeqCst) {
                r.missing("issuer corp: keys not loaded");
            }
            r
        },
        None,
    )
    .await;
    let http = client();

    let live = http.get(admin.url("/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.text().await.unwrap(), "ok\n");

    let ready = http.get(admin.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("spop listener not up"), "{body}");
    assert!(body.contains("issuer corp: keys not loaded"), "{body}");
    assert_eq!(metrics().ready.get(), 0);

    spop_up.store(true, Ordering::SeqCst);
    let body = http
        .get(admin.url("/ready"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("spop listener"), "{body}");
    assert!(body.contains("issuer corp: keys not loaded"), "{body}");

    keys_loaded.store(true, Ordering::SeqCst);
    let ready = http.get(admin.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ok\n");

    // Touch the labelled families whose children appear only once used.
    let m = metrics();
    m.spop_frames.with_label_values(&["notify"]).inc();
    m.jwks_refresh.with_label_values(&["corp", "success"]).inc();
    m.upstream_token_requests
        .with_label_values(&["serving-sp", "success"])
        .inc();
    m.decision_duration.observe(0.000_012);
    m.decision_duration.observe(0.3);

    let resp = http.get(admin.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        ctype.starts_with("text/plain; version=0.0.4"),
        "content-type {ctype}"
    );
    let text = resp.text().await.unwrap();
    let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    for (name, kind) in [
        ("idgate_decisions_total", "counter"),
        ("idgate_decision_duration_seconds", "histogram"),
        ("idgate_spop_connections", "gauge"),
        ("idgate_spop_frames_total", "counter"),
        ("idgate_token_cache_requests_total", "counter"),
        ("idgate_jwks_refresh_total", "counter"),
        ("idgate_upstream_token_requests_total", "counter"),
        ("idgate_config_reloads_total", "counter"),
        ("idgate_build_info", "gauge"),
        ("idgate_ready", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        let f = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from /metrics"));
        assert_eq!(f.kind, kind, "{name} TYPE");
        assert!(!f.help.is_empty(), "{name} HELP");
        assert!(!f.samples.is_empty(), "{name} has no sample");
    }

    // Label sets of the contract.
    let decisions = &families["idgate_decisions_total"];
    assert!(decisions
        .samples
        .iter()
        .any(|s| s.labels.get("decision") == Some(&"deny".to_owned())
            && s.labels.get("reason") == Some(&"no_matching_rule".to_owned())));
    let build = &families["idgate_build_info"].samples[0];
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(build.value, 1.0);
    assert_eq!(families["idgate_ready"].samples[0].value, 1.0);

    // The latency histogram resolves microseconds and reaches seconds.
    let les: Vec<&str> = families["idgate_decision_duration_seconds"]
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(les.first(), Some(&"0.000005"), "{les:?}");
    assert!(les.contains(&"1"), "{les:?}");
    assert_eq!(les.last(), Some(&"+Inf"));

    let missing = http.get(admin.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let post = http.post(admin.url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    let head = http.head(admin.url("/live")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    admin.stop().await;
}

#[tokio::test]
async fn idle_connection_is_closed_after_header_read_timeout() {
    let admin = start(
        || true,
        Some(AdminOptions {
            header_read_timeout: Duration::from_millis(200),
            ..AdminOptions::default()
        }),
    )
    .await;
    let mut idle = TcpStream::connect(admin.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PROMPTLY, idle.read(&mut buf))
        .await
        .expect("server closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "no response to a request never sent");
    admin.stop().await;
}

/// At the cap a new connection evicts the connection idle longest: one idle between
/// requests or still sending its request head. It is served at once.
#[tokio::test]
async fn at_the_cap_the_idle_longest_connection_is_evicted() {
    let admin = start(
        || true,
        Some(AdminOptions {
            max_connections: 2,
            ..AdminOptions::default()
        }),
    )
    .await;
    let before = metrics().admin_connections_evicted.get();
    // The oldest has sent half a request; the other one a whole request and is kept alive.
    let mut half = TcpStream::connect(admin.addr).await.unwrap();
    half.write_all(b"GET /live HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut keepalive = TcpStream::connect(admin.addr).await.unwrap();
    keepalive
        .write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(PROMPTLY, keepalive.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);

    let started = std::time::Instant::now();
    let status = client()
        .get(admin.url("/live"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // `half` was the one idle longest: closed without an answer.
    let n = tokio::time::timeout(PROMPTLY, half.read(&mut buf))
        .await
        .expect("the evicted connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", &buf[..n]);
    assert!(metrics().admin_connections_evicted.get() > before);
    admin.stop().await;
}

/// At the cap (one connection) with that connection's request in its handler, a new connection
/// waits: it is answered only after the busy request, and without cutting it. Then, with the first
/// client keeping its connection open but idle, the next new connection evicts it at once rather
/// than waiting for the idle timeout. The server runs on a runtime of its own and the clients on
/// plain threads, so that a handler blocking a worker cannot delay the test's own observations.
#[test]
fn a_busy_connection_is_waited_for_and_an_idle_one_evicted() {
    use std::sync::mpsc;
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let listener = TcpListener::from_std(listener).unwrap();
        rt.block_on(serve_admin_with(
            listener,
            move || {
                // /ready's handler stays busy until the test releases it (bounded).
                let _ = entered_tx.send(());
                let _ = release_rx.lock().unwrap().recv_timeout(PROMPTLY);
                true
            },
            async move {
                let _ = stop_rx.await;
            },
            AdminOptions {
                max_connections: 1,
                ..AdminOptions::default()
            },
        ))
    });
    let blocking = || {
        reqwest::blocking::Client::builder()
            .timeout(PROMPTLY)
            .no_proxy()
            .build()
            .unwrap()
    };
    let url = move |path: &str| format!("http://{addr}{path}");
    // The busy client keeps its connection (reqwest's pool) after the answer.
    let busy_client = blocking();
    let busy = {
        let (c, u) = (busy_client.clone(), url("/ready"));
        std::thread::spawn(move || c.get(u).send().map(|r| r.status().as_u16()))
    };
    entered_rx
        .recv_timeout(PROMPTLY)
        .expect("/ready never reached its handler");
    let (live_tx, live_rx) = mpsc::channel();
    let live = {
        let (c, u) = (blocking(), url("/live"));
        std::thread::spawn(move || {
            let _ = live_tx.send(c.get(u).send().map(|r| r.status().as_u16()));
        })
    };
    assert!(
        live_rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a second connection was answered over the cap of 1 while the first was busy"
    );
    release_tx.send(()).unwrap();
    assert_eq!(
        busy.join().unwrap().unwrap(),
        200,
        "the busy request was cut"
    );
    // The first connection is now idle but open (busy_client still holds it): the waiting
    // connection evicts it instead of waiting for the 5 s header-read timeout.
    let answered = live_rx.recv_timeout(Duration::from_secs(2));
    assert_eq!(
        answered
            .expect("the waiting connection was not admitted once the other went idle")
            .unwrap(),
        200
    );
    live.join().unwrap();
    drop(busy_client);
    let _ = stop_tx.send(());
    server.join().unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_closes_the_listener() {
    let admin = start(|| true, None).await;
    let addr = admin.addr;
    let ok = client()
        .get(format!("http://{addr}/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    admin.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still accepting after shutdown"
    );
}

// ---- a strict parser of the Prometheus text exposition format 0.0.4 ----

#[derive(Debug, Default)]
struct Family {
    help: String,
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (the part after the metric name), returning labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parse and check: every sample belongs to a family declared by `# TYPE` before it, HELP and
/// TYPE appear at most once per family, families are contiguous, histograms are cumulative
/// and end with `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> Result<HashMap<String, Family>, String> {
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // free-form comment
            }
            let name = parts.next().ok_or_else(|| err("no metric name".into()))?;
            if !is_metric_name(name) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            let arg = parts.next().unwrap_or("");
            if order.last().map(String::as_str) != Some(name) {
                if families.contains_key(name) {
                    return Err(err(format!("family {name} is not contiguous")));
                }
                order.push(name.to_owned());
            }
            let f = families.entry(name.to_owned()).or_default();
            if keyword == "HELP" {
                if !f.help.is_empty() {
                    return Err(err("second HELP".into()));
                }
                f.help = arg.to_owned();
            } else {
                if !f.kind.is_empty() || !f.samples.is_empty() {
                    return Err(err("TYPE after samples or twice".into()));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                    return Err(err(format!("bad type {arg:?}")));
                }
                f.kind = arg.to_owned();
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| err(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = order
            .last()
            .ok_or_else(|| err("sample before any TYPE".into()))?;
        let f = families.get_mut(family).expect("ordered families exist");
        let belongs = match f.kind.as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_owned()),
            "summary" => {
                name == family
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count")
            }
            "" => return Err(err(format!("{family} has no TYPE"))),
            _ => name == family,
        };
        if !belongs {
            return Err(err(format!("sample {name} outside its family {family}")));
        }
        f.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, f) in &families {
        if f.kind == "histogram" {
            let buckets: Vec<&Sample> = f
                .samples
                .iter()
                .filter(|s| s.name.ends_with("_bucket"))
                .collect();
            if buckets.windows(2).any(|w| w[1].value < w[0].value) {
                return Err(format!("{name}: buckets not cumulative"));
            }
            let last = buckets.last().ok_or(format!("{name}: no buckets"))?;
            if last.labels.get("le").map(String::as_str) != Some("+Inf") {
                return Err(format!("{name}: last bucket is not +Inf"));
            }
            let count = f
                .samples
                .iter()
                .find(|s| s.name.ends_with("_count"))
                .ok_or(format!("{name}: no _count"))?;
            if count.value != last.value {
                return Err(format!("{name}: +Inf bucket != _count"));
            }
        }
    }
    Ok(families)
}

#[test]
fn the_parser_rejects_malformed_expositions() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 3\n";
    assert!(parse_exposition(ok).is_ok());
    for bad in [
        "a_total 3\n",                                               // no TYPE
        "# TYPE a counter\na{x=\"1} 3\n",                            // unterminated
        "# TYPE a counter\na{1x=\"1\"} 3\n",                         // bad label name
        "# TYPE a counter\na 3 4 5\n",                               // trailing
        "# TYPE a counter\na three\n",                               // bad value
        "# TYPE a counter\n# TYPE b gauge\nb 1\n# TYPE a counter\n", // not contiguous
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n",
        "# TYPE a counter\nb 1\n", // wrong family
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}
