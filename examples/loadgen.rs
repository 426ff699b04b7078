//! SPOP load generator: plays HAProxy's side of SPOP against an agent (idgate, the null agent,
//! any SPOA) and checks every answer.
//!
//! ```text
//! cargo run --release --example loadgen -- mint --out /tmp/lg            # tokens + JWKS
//! cargo run --release --example loadgen -- jwks --file /tmp/lg/jwks.json --listen 127.0.0.1:18999 &
//! idgate run -c agent.toml &                                             # jwks_uri -> the line above
//! cargo run --release --example loadgen -- run --tokens /tmp/lg --target 127.0.0.1:12345 \
//!     --connections 4 --depth 16 --duration 10s --invalid-share 0.01 --agent-pid $(pidof idgate)
//! ```
//!
//! Why three subcommands rather than one process that does everything: the agent under test
//! must be configured with the issuer's JWKS URL before it starts, HAProxy's native
//! `jwt_verify` (benches/e2e.sh) needs the same key, and wrk needs the same tokens. Minting once
//! to files, then serving the JWKS from a separate small process, lets every tool of a
//! benchmark share exactly the same tokens and keys, and lets the load run itself spend no
//! CPU on anything but the protocol.
//!
//! `run` speaks SPOP with the crate's own encoder and decoder (HAPROXY-HELLO, NOTIFY,
//! HAPROXY-DISCONNECT out; AGENT-HELLO, ACK, AGENT-DISCONNECT in), keeps `--depth` NOTIFYs in
//! flight on each of `--connections` connections (HAProxy 2.6 allows 20 per connection, 3.x
//! hard-codes 20), and CHECKS every ACK:
//! - it answers a NOTIFY we sent and have not seen answered (matching stream-id and frame-id:
//!   a duplicate, stray or missing ACK is an error);
//! - with `--expect idgate`: `allow`, `status` and `reason` are what the token class must get
//!   (`hot`/`distinct`: `true/200/ok`; `invalid`: `false/401/bad_signature`); with
//!   `--expect allow-all` (the null agent) every ACK must be `true/200/ok`;
//! - at the end every NOTIFY got its ACK, and the agent answers HAPROXY-DISCONNECT with
//!   AGENT-DISCONNECT.
//!
//! Any mismatch is reported and makes the exit status 1, so a benchmark can never report the
//! speed of wrong answers.
//!
//! Why this does not use the tests' SPOP client (tests/support/spop_client.rs): that client
//! is built for assertions (one NOTIFY, one decoded ACK as a map of variables, a panic on
//! anything unexpected), while this is a benchmark's event loop: it keeps a window of NOTIFYs
//! per connection keyed by frame-id slot, encodes each token's `authorize` message once and
//! reuses it, parses many ACKs out of one buffered read without allocating a map per ACK, and
//! reports errors as counted messages instead of panicking. What both share is the protocol
//! itself: the crate's own encoder and decoder (`idgate::spop::frame`), which this file calls
//! directly. The `authorize` arguments match what the client's `Request::absent_as_null`
//! sends (HAProxy's, with the shipped idgate.spoe.conf).
//!
//! Token classes: one `hot` token (the steady state: a cached identity), `--distinct N`
//! different valid tokens (each a different subject), and `invalid` tokens (valid tokens whose
//! signature was altered: the agent must run the full signature check and refuse them). The
//! mix is chosen per NOTIFY with `--distinct-share` and `--invalid-share`.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use idgate::spop::data::KvIter;
use idgate::spop::frame::{self, Action, Arg, FrameType, Header, Message, Scope, FLAG_FIN};
use idgate::spop::{Status, TypedData};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// HAProxy's default and largest `max-frame-size` (tune.bufsize 16384 - 4).
const HAPROXY_MAX_FRAME_SIZE: u32 = 16380;
/// HAProxy keeps at most 20 NOTIFYs in flight per connection (2.6 `max-waiting-frames`
/// default, 3.x `streams_limit`); the frame id carries the slot, so the depth must also fit
/// comfortably in a one-byte varint.
const MAX_DEPTH: usize = 200;
/// Linux reports utime/stime in /proc in USER_HZ, which is 100 on every mainstream ABI.
const USER_HZ: f64 = 100.0;
/// Error messages kept for the report (the count is always exact).
const MAX_ERROR_MESSAGES: usize = 10;
/// Read buffer per connection: many ACKs per read, and room for an AGENT-DISCONNECT.
const READ_BUF: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "SPOP load generator: plays HAProxy against an SPOE agent and checks every ACK"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Mint tokens and the matching JWKS into a directory (hot.jwt, distinct.txt, invalid.txt,
    /// jwks.json, meta.json).
    Mint(MintArgs),
    /// Serve a JWKS file at http://LISTEN/jwks until SIGTERM/SIGINT (loopback IdP for the agent).
    Jwks(JwksArgs),
    /// Run the load against an agent and check every answer.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Alg {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl Alg {
    fn jwt(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
        }
    }

    fn fixture(self) -> &'static str {
        match self {
            Alg::Rs256 => "rsa1.pem",
            Alg::Es256 => "ec1.pem",
            Alg::EdDsa => "ed1.pem",
        }
    }
}

#[derive(Debug, Args)]
struct MintArgs {
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    /// Signing algorithm.
    #[arg(long, value_enum, default_value = "RS256")]
    alg: Alg,
    /// Private key PEM. Default: the test fixture for --alg (tests/fixtures/keys).
    #[arg(long)]
    key: Option<PathBuf>,
    #[arg(long, default_value = "bench-1")]
    kid: String,
    /// `iss` of every token (configure the agent's issuer with exactly this value).
    #[arg(long, default_value = "https://idp.bench.invalid")]
    issuer: String,
    #[arg(long, default_value = "idgate-bench")]
    audience: String,
    /// Token lifetime (keep it under the issuer's max_token_lifetime, 24h by default).
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Number of distinct valid tokens (distinct.txt), one subject each.
    #[arg(long, default_value_t = 1000)]
    distinct: usize,
    /// Number of invalid tokens (invalid.txt): valid tokens with one signature byte changed.
    #[arg(long, default_value_t = 100)]
    invalid: usize,
    /// Value of the `groups` claim.
    #[arg(long, default_value = "bench")]
    group: String,
}

#[derive(Debug, Args)]
struct JwksArgs {
    /// The JWKS document to serve.
    #[arg(long)]
    file: PathBuf,
    /// Loopback address to listen on (port 0: any free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Expect {
    /// idgate with a rule allowing the bench path to any valid identity.
    Idgate,
    /// Every ACK allows (the null agent).
    AllowAll,
    /// Only the protocol is checked (ids, one ACK per NOTIFY).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Order {
    Random,
    Sequential,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The agent's SPOP address.
    #[arg(long, default_value = "127.0.0.1:12345")]
    target: SocketAddr,
    /// Directory written by `mint`.
    #[arg(long)]
    tokens: PathBuf,
    /// SPOP connections.
    #[arg(short, long, default_value_t = 4)]
    connections: usize,
    /// NOTIFYs in flight per connection (HAProxy: at most 20).
    #[arg(short, long, default_value_t = 16)]
    depth: usize,
    /// Measured duration (after --warmup).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured (but checked) load before the measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Stop after this many NOTIFYs instead of after a duration (no warmup; e.g. to send each
    /// distinct token exactly once with --order sequential --distinct-share 1).
    #[arg(long)]
    max_requests: Option<u64>,
    /// Use the first N tokens of distinct.txt (default: all).
    #[arg(long)]
    distinct: Option<usize>,
    /// Share of NOTIFYs carrying one of the distinct tokens.
    #[arg(long, default_value_t = 0.0)]
    distinct_share: f64,
    /// Share of NOTIFYs carrying an invalid token.
    #[arg(long, default_value_t = 0.0)]
    invalid_share: f64,
    /// How distinct tokens are picked.
    #[arg(long, value_enum, default_value = "random")]
    order: Order,
    /// What the answers must be.
    #[arg(long, value_enum, default_value = "idgate")]
    expect: Expect,
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The agent's PID: report its CPU time per decision and its memory.
    #[arg(long)]
    agent_pid: Option<u32>,
    /// How long to wait for outstanding ACKs at the end, and for any one read.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ack_timeout: Duration,
    #[arg(long, default_value = "GET")]
    method: String,
    #[arg(long, default_value = "/bench/resource")]
    path: String,
    #[arg(long, default_value = "bench.local")]
    host: String,
    /// Print the summary as one JSON object (for scripts) instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    idgate::auth::install_crypto_provider();
    let result = match cli.cmd {
        Cmd::Mint(a) => mint(&a),
        Cmd::Jwks(a) => serve_jwks(&a),
        Cmd::Run(a) => run(a),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ----------------------------------------------------------------------------------------------
// mint

fn mint(a: &MintArgs) -> Res<bool> {
    let key_path = a.key.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(a.alg.fixture())
    });
    let pem = fs::read(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let alg = a.alg.jwt();
    let key = match a.alg {
        Alg::Rs256 => EncodingKey::from_rsa_pem(&pem),
        Alg::Es256 => EncodingKey::from_ec_pem(&pem),
        Alg::EdDsa => EncodingKey::from_ed_pem(&pem),
    }
    .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg)?)?;
    jwk["kid"] = json!(a.kid);
    jwk["use"] = json!("sig");
    fs::create_dir_all(&a.out)?;

    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(a.kid.clone());
    header.typ = Some("JWT".into());
    let iat = idgate::auth::unix_now();
    let exp = iat + a.ttl.as_secs();
    let token = |sub: &str| -> Res<String> {
        let claims = json!({
            "iss": a.issuer, "sub": sub, "aud": a.audience, "iat": iat, "exp": exp,
            "email": format!("{sub}@bench.example"), "groups": [a.group], "scope": "read write",
        });
        Ok(jsonwebtoken::encode(&header, &claims, &key)?)
    };

    fs::write(a.out.join("hot.jwt"), token("hot-user")? + "\n")?;
    let mut distinct = String::new();
    for i in 0..a.distinct {
        distinct.push_str(&token(&format!("user-{i}"))?);
        distinct.push('\n');
    }
    fs::write(a.out.join("distinct.txt"), distinct)?;
    let mut invalid = String::new();
    for i in 0..a.invalid {
        invalid.push_str(&corrupt_signature(&token(&format!("bad-{i}"))?));
        invalid.push('\n');
    }
    fs::write(a.out.join("invalid.txt"), invalid)?;
    fs::write(
        a.out.join("jwks.json"),
        json!({ "keys": [jwk] }).to_string(),
    )?;
    let meta = json!({
        "alg": format!("{alg:?}"), "kid": a.kid, "issuer": a.issuer, "audience": a.audience,
        "group": a.group, "iat": iat, "exp": exp, "key": key_path,
        "distinct": a.distinct, "invalid": a.invalid,
    });
    fs::write(a.out.join("meta.json"), format!("{meta:#}\n"))?;
    eprintln!(
        "minted 1 hot, {} distinct and {} invalid {alg:?} tokens (exp in {}) into {}",
        a.distinct,
        a.invalid,
        humantime::format_duration(a.ttl),
        a.out.display()
    );
    Ok(true)
}

/// Change one character in the middle of the signature (never the last one, whose low bits
/// may be padding a decoder ignores): the token still parses, its signature no longer verifies.
fn corrupt_signature(token: &str) -> String {
    let sig_start = token.rfind('.').map_or(0, |i| i + 1);
    let pos = sig_start + (token.len() - sig_start) / 2;
    let mut bytes = token.as_bytes().to_vec();
    bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("base64url stays ASCII")
}

// ----------------------------------------------------------------------------------------------
// jwks

fn serve_jwks(a: &JwksArgs) -> Res<bool> {
    if !a.listen.ip().is_loopback() {
        return Err("--listen must be a loopback address".into());
    }
    let body = fs::read_to_string(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    serde_json::from_str::<serde_json::Value>(&body)
        .map_err(|e| format!("{}: not JSON: {e}", a.file.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use axum::http::header;
        let body: &'static str = Box::leak(body.into_boxed_str());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || async move {
                ([(header::CONTENT_TYPE, "application/json")], body)
            }),
        );
        let listener = tokio::net::TcpListener::bind(a.listen).await?;
        println!("http://{}/jwks", listener.local_addr()?);
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await?;
        Ok(true)
    })
}

// ----------------------------------------------------------------------------------------------
// run: shared state

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Hot,
    Distinct,
    Invalid,
}

impl Class {
    const ALL: [Class; 3] = [Class::Hot, Class::Distinct, Class::Invalid];

    fn name(self) -> &'static str {
        match self {
            Class::Hot => "hot",
            Class::Distinct => "distinct",
            Class::Invalid => "invalid",
        }
    }

    /// (allow, status, reason) this class must get, if checked.
    fn expected(self, expect: Expect) -> Option<(bool, i64, &'static str)> {
        match (expect, self) {
            (Expect::None, _) => None,
            (Expect::AllowAll, _) | (Expect::Idgate, Class::Hot | Class::Distinct) => {
                Some((true, 200, "ok"))
            }
            (Expect::Idgate, Class::Invalid) => Some((false, 401, "bad_signature")),
        }
    }
}

/// The NOTIFY messages, one per token, built once.
struct Corpus {
    hot: Message,
    distinct: Vec<Message>,
    invalid: Vec<Message>,
}

const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

struct Ctx {
    args: RunArgs,
    corpus: Corpus,
    phase: AtomicU8,
    /// NOTIFYs still allowed with --max-requests.
    budget: AtomicU64,
    /// Next distinct token with --order sequential.
    cursor: AtomicU64,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Ctx {
    fn error(&self, msg: String) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < MAX_ERROR_MESSAGES as u64 {
            self.messages
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(msg);
        }
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn take_budget(&self) -> bool {
        if self.args.max_requests.is_none() {
            return true;
        }
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    }
}

/// Per-connection results, merged at the end.
struct Stats {
    sent: u64,
    acked: u64,
    measured: u64,
    per_class: [u64; 3],
    latency: Histogram<u64>,
    /// The `hot` (cached) class alone: in a mixed load, whether cached decisions wait behind
    /// signature checks.
    hot_latency: Histogram<u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            sent: 0,
            acked: 0,
            measured: 0,
            per_class: [0; 3],
            latency: latency_histogram(),
            hot_latency: latency_histogram(),
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.measured += o.measured;
        for i in 0..3 {
            self.per_class[i] += o.per_class[i];
        }
        self.latency.add(&o.latency).expect("same bounds");
        self.hot_latency.add(&o.hot_latency).expect("same bounds");
    }
}

/// 1 ns .. 60 s at 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn read_tokens(dir: &Path, name: &str) -> Res<Vec<String>> {
    let p = dir.join(name);
    let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn message(a: &RunArgs, token: &str) -> Message {
    let s = |v: &str| TypedData::String(Bytes::copy_from_slice(v.as_bytes()));
    let arg = |name: &'static str, value| Arg {
        name: Bytes::from_static(name.as_bytes()),
        value,
    };
    // The argument list HAProxy sends with the shipped idgate.spoe.conf: no cookie header
    // gives NULL, `src` is an IPv4 address, `unique_id` an ID of the usual length.
    Message {
        name: Bytes::from_static(b"authorize"),
        args: vec![
            arg("method", s(&a.method)),
            arg("path", s(&a.path)),
            arg("host", s(&a.host)),
            arg("authorization", s(&format!("Bearer {token}"))),
            arg("cookie", TypedData::Null),
            arg("src", TypedData::Ipv4(Ipv4Addr::LOCALHOST)),
            arg(
                "unique_id",
                s("7F000001:C350_7F000001:1F90_6650A1B2_0001:1A2B"),
            ),
        ],
    }
}

fn build_corpus(a: &RunArgs) -> Res<Corpus> {
    let hot = read_tokens(&a.tokens, "hot.jwt")?;
    let hot = hot.first().ok_or("hot.jwt is empty")?;
    let mut distinct = read_tokens(&a.tokens, "distinct.txt")?;
    if let Some(n) = a.distinct {
        if n > distinct.len() {
            return Err(format!(
                "--distinct {n}: distinct.txt has only {} tokens (mint more)",
                distinct.len()
            )
            .into());
        }
        distinct.truncate(n);
    }
    let invalid = read_tokens(&a.tokens, "invalid.txt")?;
    if a.distinct_share > 0.0 && distinct.is_empty() {
        return Err("--distinct-share > 0 but no distinct tokens".into());
    }
    if a.invalid_share > 0.0 && invalid.is_empty() {
        return Err("--invalid-share > 0 but invalid.txt is empty".into());
    }
    Ok(Corpus {
        hot: message(a, hot),
        distinct: distinct.iter().map(|t| message(a, t)).collect(),
        invalid: invalid.iter().map(|t| message(a, t)).collect(),
    })
}

/// xorshift64*: cheap, deterministic per connection; quality is irrelevant here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ----------------------------------------------------------------------------------------------
// run: one connection

struct Pending {
    stream_id: u64,
    sent: Instant,
    class: Class,
}

struct Conn {
    id: usize,
    ctx: Arc<Ctx>,
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Slot i holds the NOTIFY sent with frame-id i + 1.
    pending: Vec<Option<Pending>>,
    free: Vec<usize>,
    next_stream_id: u64,
    rng: Rng,
    stats: Stats,
    max_frame_size: u32,
}

impl Conn {
    fn error(&self, msg: impl std::fmt::Display) {
        self.ctx.error(format!("connection {}: {msg}", self.id));
    }

    fn inflight(&self) -> usize {
        self.pending.len() - self.free.len()
    }

    /// The next complete frame body in the read buffer. Errors on a length we never allowed.
    fn split_frame(&mut self) -> Result<Option<Bytes>, String> {
        if self.rbuf.len() < frame::LENGTH_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
        if len > self.max_frame_size || len < frame::MIN_FRAME_LEN {
            return Err(format!(
                "frame length {len} outside [7, {}]",
                self.max_frame_size
            ));
        }
        let total = frame::LENGTH_PREFIX + len as usize;
        if self.rbuf.len() < total {
            return Ok(None);
        }
        self.rbuf.advance(frame::LENGTH_PREFIX);
        Ok(Some(self.rbuf.split_to(len as usize).freeze()))
    }

    /// Read until one whole frame is buffered.
    async fn read_frame(&mut self) -> Result<Bytes, String> {
        loop {
            if let Some(f) = self.split_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        self.rbuf.reserve(READ_BUF);
        match tokio::time::timeout(
            self.ctx.args.ack_timeout,
            self.stream.read_buf(&mut self.rbuf),
        )
        .await
        {
            Err(_) => Err(format!(
                "no data from the agent for {:?} ({} NOTIFYs unanswered)",
                self.ctx.args.ack_timeout,
                self.inflight()
            )),
            Ok(Err(e)) => Err(format!("read: {e}")),
            Ok(Ok(0)) => Err(format!(
                "agent closed the connection ({} NOTIFYs unanswered)",
                self.inflight()
            )),
            Ok(Ok(_)) => Ok(()),
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        r.map_err(|e| format!("write: {e}"))
    }

    async fn hello(&mut self) -> Result<(), String> {
        let caps = if self.ctx.args.depth > 1 {
            "pipelining"
        } else {
            ""
        };
        frame::encode_haproxy_hello(&mut self.wbuf, "2.0", HAPROXY_MAX_FRAME_SIZE, caps, false);
        self.flush().await?;
        let mut body = self.read_frame().await?;
        let h = Header::decode(&mut body).map_err(|e| format!("AGENT-HELLO header: {e}"))?;
        if h.frame_type != FrameType::AgentHello as u8 {
            return Err(unexpected(&h, body, "AGENT-HELLO"));
        }
        let (mut version, mut mfs, mut pipelining) = (None, None, false);
        for kv in KvIter::new(body) {
            let (k, v) = kv.map_err(|e| format!("AGENT-HELLO: {e}"))?;
            match (&k[..], v) {
                (b"version", TypedData::String(s)) => version = Some(s),
                (b"max-frame-size", v) => mfs = v.as_i64(),
                (b"capabilities", TypedData::String(s)) => {
                    pipelining = s
                        .split(|&b| b == b',')
                        .any(|c| c.trim_ascii() == b"pipelining");
                }
                _ => {}
            }
        }
        if version.as_deref() != Some(b"2.0".as_slice()) {
            return Err(format!("AGENT-HELLO version {version:?}, want \"2.0\""));
        }
        let mfs = mfs.ok_or("AGENT-HELLO without max-frame-size")?;
        if !(256..=i64::from(HAPROXY_MAX_FRAME_SIZE)).contains(&mfs) {
            return Err(format!("AGENT-HELLO max-frame-size {mfs} out of range"));
        }
        if self.ctx.args.depth > 1 && !pipelining {
            return Err("agent does not announce pipelining; use --depth 1".into());
        }
        self.max_frame_size = mfs as u32;
        Ok(())
    }

    fn pick(&mut self) -> (Class, usize) {
        let a = &self.ctx.args;
        let c = &self.ctx.corpus;
        let r = self.rng.unit();
        if r < a.invalid_share {
            let i = (self.rng.next() % c.invalid.len() as u64) as usize;
            (Class::Invalid, i)
        } else if r < a.invalid_share + a.distinct_share {
            let i = match a.order {
                Order::Random => self.rng.next(),
                Order::Sequential => self.ctx.cursor.fetch_add(1, Ordering::Relaxed),
            } % c.distinct.len() as u64;
            (Class::Distinct, i as usize)
        } else {
            (Class::Hot, 0)
        }
    }

    /// Queue NOTIFYs until the depth is reached (or the run is stopping).
    fn fill_window(&mut self, now: Instant) {
        while let Some(&slot) = self.free.last() {
            if self.ctx.phase() == PHASE_STOP || !self.ctx.take_budget() {
                return;
            }
            self.free.pop();
            let (class, i) = self.pick();
            let corpus = &self.ctx.corpus;
            let msg = match class {
                Class::Hot => &corpus.hot,
                Class::Distinct => &corpus.distinct[i],
                Class::Invalid => &corpus.invalid[i],
            };
            let sid = self.next_stream_id;
            self.next_stream_id += 1;
            frame::encode_notify(
                &mut self.wbuf,
                sid,
                slot as u64 + 1,
                std::slice::from_ref(msg),
            );
            self.pending[slot] = Some(Pending {
                stream_id: sid,
                sent: now,
                class,
            });
            self.stats.sent += 1;
        }
    }

    /// Check one frame from the agent (an ACK, normally).
    fn on_frame(&mut self, mut body: Bytes, now: Instant, measuring: bool) -> Result<(), String> {
        let h = Header::decode(&mut body).map_err(|e| format!("frame header: {e}"))?;
        if h.frame_type != FrameType::Ack as u8 {
            return Err(unexpected(&h, body, "ACK"));
        }
        if h.flags != FLAG_FIN {
            return Err(format!("ACK flags {:#010x}, want FIN only", h.flags));
        }
        let slot = usize::try_from(h.frame_id.wrapping_sub(1)).unwrap_or(usize::MAX);
        let p = match self.pending.get_mut(slot).map(Option::take) {
            Some(Some(p)) if p.stream_id == h.stream_id => p,
            Some(other) => {
                if let Some(slot_val) = other {
                    // Put back what was there: it is still owed an ACK.
                    self.pending[slot] = Some(slot_val);
                }
                return Err(format!(
                    "ACK for stream-id {} frame-id {}: no such NOTIFY in flight (duplicate or stray)",
                    h.stream_id, h.frame_id
                ));
            }
            None => return Err(format!("ACK frame-id {} was never sent", h.frame_id)),
        };
        self.free.push(slot);
        self.stats.acked += 1;
        if let Some((allow, status, reason)) = p.class.expected(self.ctx.args.expect) {
            let got = verdict_of(body)?;
            if got != (Some(allow), Some(status), Some(reason.to_string())) {
                self.error(format!(
                    "{} token: got allow={:?} status={:?} reason={:?}, want {allow}/{status}/{reason}",
                    p.class.name(),
                    got.0,
                    got.1,
                    got.2
                ));
            }
        }
        if measuring {
            self.stats.measured += 1;
            self.stats.per_class[p.class as usize] += 1;
            let ns = now.saturating_duration_since(p.sent).as_nanos();
            let ns = u64::try_from(ns).unwrap_or(u64::MAX).max(1);
            let _ = self.stats.latency.record(ns);
            if p.class == Class::Hot {
                let _ = self.stats.hot_latency.record(ns);
            }
        }
        Ok(())
    }

    async fn run(&mut self) -> Result<(), String> {
        self.hello().await?;
        loop {
            self.fill_window(Instant::now());
            self.flush().await?;
            if self.inflight() == 0 {
                break;
            }
            self.fill().await?;
            let now = Instant::now();
            let measuring = self.ctx.phase() == PHASE_MEASURE;
            while let Some(f) = self.split_frame()? {
                self.on_frame(f, now, measuring)?;
            }
        }
        self.disconnect().await
    }

    /// HAPROXY-DISCONNECT; the agent must answer AGENT-DISCONNECT (status 0).
    async fn disconnect(&mut self) -> Result<(), String> {
        frame::encode_haproxy_disconnect(&mut self.wbuf, Status::Normal, "loadgen done");
        self.flush().await?;
        let mut body = self.read_frame().await?;
        let h = Header::decode(&mut body).map_err(|e| format!("frame header: {e}"))?;
        if h.frame_type != FrameType::AgentDisconnect as u8 {
            return Err(unexpected(&h, body, "AGENT-DISCONNECT"));
        }
        let d = frame::decode_disconnect(body, "AGENT-DISCONNECT").map_err(|e| e.to_string())?;
        if d.status != Status::Normal {
            return Err(format!(
                "AGENT-DISCONNECT status {} ({})",
                d.status.code(),
                String::from_utf8_lossy(&d.message)
            ));
        }
        Ok(())
    }
}

fn unexpected(h: &Header, body: Bytes, want: &str) -> String {
    if h.frame_type == FrameType::AgentDisconnect as u8 {
        return match frame::decode_disconnect(body, "AGENT-DISCONNECT") {
            Ok(d) => format!(
                "agent disconnected: status {} ({})",
                d.status.code(),
                String::from_utf8_lossy(&d.message)
            ),
            Err(e) => format!("malformed AGENT-DISCONNECT: {e}"),
        };
    }
    format!("frame type {} where {want} was expected", h.frame_type)
}

type Got = (Option<bool>, Option<i64>, Option<String>);

/// `allow`, `status`, `reason` (txn scope) of an ACK.
fn verdict_of(payload: Bytes) -> Result<Got, String> {
    let actions = frame::decode_actions(payload).map_err(|e| format!("ACK actions: {e}"))?;
    let mut got: Got = (None, None, None);
    for a in actions {
        let Action::SetVar {
            scope: Scope::Txn,
            name,
            value,
        } = a
        else {
            continue;
        };
        match (&name[..], value) {
            (b"allow", TypedData::Bool(b)) => got.0 = Some(b),
            (b"status", v) => got.1 = v.as_i64(),
            (b"reason", TypedData::String(s)) => {
                got.2 = Some(String::from_utf8_lossy(&s).into_owned())
            }
            _ => {}
        }
    }
    Ok(got)
}

async fn connection(id: usize, ctx: Arc<Ctx>) -> Stats {
    let depth = ctx.args.depth;
    let stream = match TcpStream::connect(ctx.args.target).await {
        Ok(s) => s,
        Err(e) => {
            ctx.error(format!("connection {id}: connect {}: {e}", ctx.args.target));
            return Stats::new();
        }
    };
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        id,
        ctx,
        stream,
        rbuf: BytesMut::with_capacity(READ_BUF),
        wbuf: BytesMut::with_capacity(depth * 2048),
        pending: (0..depth).map(|_| None).collect(),
        free: (0..depth).rev().collect(),
        next_stream_id: 1,
        rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)),
        stats: Stats::new(),
        max_frame_size: HAPROXY_MAX_FRAME_SIZE,
    };
    if let Err(e) = c.run().await {
        c.error(e);
    }
    c.stats
}

// ----------------------------------------------------------------------------------------------
// run: /proc readings

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5) are utime and stime; `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / USER_HZ)
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: &str) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// ----------------------------------------------------------------------------------------------
// run: driver

fn run(a: RunArgs) -> Res<bool> {
    if a.depth == 0 || a.depth > MAX_DEPTH {
        return Err(format!("--depth must be 1..={MAX_DEPTH}").into());
    }
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let shares_ok = |s: f64| (0.0..=1.0).contains(&s);
    if !shares_ok(a.distinct_share)
        || !shares_ok(a.invalid_share)
        || a.distinct_share + a.invalid_share > 1.0
    {
        return Err("shares must be within [0, 1] and sum to at most 1".into());
    }
    if !a.target.ip().is_loopback() {
        return Err("--target must be a loopback address".into());
    }
    let corpus = build_corpus(&a)?;
    let rt = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()?
    };
    let ctx = Arc::new(Ctx {
        budget: AtomicU64::new(a.max_requests.unwrap_or(0)),
        phase: AtomicU8::new(if a.max_requests.is_some() {
            PHASE_MEASURE
        } else {
            PHASE_WARMUP
        }),
        cursor: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        messages: Mutex::new(Vec::new()),
        corpus,
        args: a,
    });
    let agent_pid = ctx.args.agent_pid.map(|p| p.to_string());
    let mem_before = agent_pid.as_deref().and_then(memory_kib);

    let (total, window, agent_cpu, self_cpu) = rt.block_on(async {
        let tasks: Vec<_> = (0..ctx.args.connections)
            .map(|i| tokio::spawn(connection(i, ctx.clone())))
            .collect();
        let measured_from = if ctx.args.max_requests.is_none() {
            tokio::time::sleep(ctx.args.warmup).await;
            ctx.phase.store(PHASE_MEASURE, Ordering::Relaxed);
            Instant::now()
        } else {
            Instant::now()
        };
        let cpu0 = agent_pid.as_deref().and_then(cpu_seconds);
        let self0 = cpu_seconds("self");
        let mut end = None;
        if ctx.args.max_requests.is_none() {
            tokio::time::sleep(ctx.args.duration).await;
            ctx.phase.store(PHASE_STOP, Ordering::Relaxed);
            end = Some((
                Instant::now(),
                agent_pid.as_deref().and_then(cpu_seconds),
                cpu_seconds("self"),
            ));
        }
        let mut total = Stats::new();
        for t in tasks {
            match t.await {
                Ok(s) => total.merge(&s),
                Err(e) => ctx.error(format!("connection task failed: {e}")),
            }
        }
        let (t1, cpu1, self1) = end.unwrap_or_else(|| {
            (
                Instant::now(),
                agent_pid.as_deref().and_then(cpu_seconds),
                cpu_seconds("self"),
            )
        });
        let window = t1.duration_since(measured_from);
        let agent_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
        let self_cpu = self0.zip(self1).map(|(a, b)| b - a);
        (total, window, agent_cpu, self_cpu)
    });

    let mem_after = agent_pid.as_deref().and_then(memory_kib);
    let unanswered = total.sent - total.acked;
    if unanswered > 0 {
        ctx.error(format!("{unanswered} NOTIFYs never got an ACK"));
    }
    let errors = ctx.errors.load(Ordering::Relaxed);
    let secs = window.as_secs_f64();
    let rate = total.measured as f64 / secs;
    let h = &total.latency;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let hot_us = |q: f64| total.hot_latency.value_at_quantile(q) as f64 / 1000.0;
    let a = &ctx.args;
    let summary = json!({
        "target": a.target.to_string(),
        "connections": a.connections, "depth": a.depth, "threads": a.threads,
        "expect": format!("{:?}", a.expect).to_lowercase(),
        "mix": {"distinct": ctx.corpus.distinct.len(), "distinct_share": a.distinct_share,
                "invalid_share": a.invalid_share},
        "sent": total.sent, "acked": total.acked, "measured": total.measured,
        "per_class": Class::ALL.iter()
            .map(|c| (c.name().to_string(), json!(total.per_class[*c as usize])))
            .collect::<serde_json::Map<_, _>>(),
        "seconds": secs, "decisions_per_sec": rate,
        "latency_us": {"p50": us(0.50), "p90": us(0.90), "p99": us(0.99), "p999": us(0.999),
                       "max": h.max() as f64 / 1000.0, "mean": h.mean() / 1000.0},
        "hot_latency_us": {"p50": hot_us(0.50), "p99": hot_us(0.99), "p999": hot_us(0.999)},
        "agent_cpu_seconds": agent_cpu,
        "agent_cpu_us_per_decision": agent_cpu.map(|c| c * 1e6 / total.measured.max(1) as f64),
        "agent_rss_kib_before": mem_before.map(|m| m.0),
        "agent_rss_kib_after": mem_after.map(|m| m.0),
        "agent_hwm_kib_after": mem_after.map(|m| m.1),
        "loadgen_cpu_share": self_cpu.map(|c| c / secs),
        "errors": errors,
        "error_messages": *ctx.messages.lock().unwrap_or_else(|p| p.into_inner()),
    });
    if a.json {
        println!("{summary}");
    } else {
        print_summary(&summary);
    }
    Ok(errors == 0)
}

fn print_summary(s: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.1}"));
    println!(
        "target {}  connections {}  depth {}  loadgen threads {}  expect {}",
        s["target"].as_str().unwrap_or(""),
        s["connections"],
        s["depth"],
        s["threads"],
        s["expect"].as_str().unwrap_or("")
    );
    println!(
        "mix: {} distinct tokens, distinct share {}, invalid share {}",
        s["mix"]["distinct"], s["mix"]["distinct_share"], s["mix"]["invalid_share"]
    );
    println!(
        "decisions: {} measured in {:.2}s = {:.0}/s  (sent {}, acked {}; per class {})",
        s["measured"],
        s["seconds"].as_f64().unwrap_or(0.0),
        s["decisions_per_sec"].as_f64().unwrap_or(0.0),
        s["sent"],
        s["acked"],
        s["per_class"]
    );
    let l = &s["latency_us"];
    println!(
        "latency us: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["p999"]),
        f(&l["max"]),
        f(&l["mean"])
    );
    let hot = &s["hot_latency_us"];
    println!(
        "hot (cached) token latency us: p50 {}  p99 {}  p99.9 {}",
        f(&hot["p50"]),
        f(&hot["p99"]),
        f(&hot["p999"])
    );
    if !s["agent_cpu_seconds"].is_null() {
        println!(
            "agent CPU: {:.2}s = {} us/decision; RSS {} KiB before, {} KiB after (peak {} KiB)",
            s["agent_cpu_seconds"].as_f64().unwrap_or(0.0),
            s["agent_cpu_us_per_decision"]
                .as_f64()
                .map_or("n/a".into(), |x| format!("{x:.2}")),
            s["agent_rss_kib_before"],
            s["agent_rss_kib_after"],
            s["agent_hwm_kib_after"]
        );
    }
    if let Some(c) = s["loadgen_cpu_share"].as_f64() {
        println!("loadgen CPU: {:.0}% of one core", c * 100.0);
    }
    let errors = s["errors"].as_u64().unwrap_or(0);
    if errors == 0 {
        println!("checks: every ACK matched its NOTIFY and the expected verdict");
    } else {
        println!("CHECKS FAILED: {errors} errors");
        for m in s["error_messages"].as_array().into_iter().flatten() {
            println!("  {}", m.as_str().unwrap_or(""));
        }
    }
}
