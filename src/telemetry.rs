//! Logging setup, the audit log (contract §6) and a rate limiter for repetitive log lines.
//!
//! Two streams leave the process:
//!
//! * **Diagnostic logs** (everything except target `audit`) go to stderr, as text or JSON
//!   ([`LogFormat`]), filtered by `RUST_LOG` when it is set, else by `[log] level`.
//! * **The audit log**: one JSON line per decision, emitted as a tracing event with target
//!   [`AUDIT_TARGET`] by [`audit_decision`] and written by a dedicated layer to `[log] audit`
//!   (`stderr`, `stdout`, `off` or a file path). It is always JSON, whatever the log format, and
//!   it does not depend on the log level: an operator who turns logging down to `warn` still
//!   has an audit trail.
//!
//! The audit layer writes a fixed schema ([`AUDIT_FIELDS`], in that order, `null` when absent)
//! and drops any other field an event might carry. That whitelist is the guarantee that no
//! token, cookie, signature or upstream credential ever reaches the audit log, even if a
//! future caller passes the wrong thing: the schema has no field that could hold one.
//!
//! Writers are non-blocking (a background thread per destination, from `tracing-appender`) so
//! that a slow journald or disk never stalls the decision path; see [`LOG_BUFFER_LINES`] for
//! what happens when one falls behind for long.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::decision::{AuthzRequest, Verdict};

/// The tracing target of audit events. Part of the public contract (§6): operators filter on it.
pub const AUDIT_TARGET: &str = "audit";

/// The audit line's fields, in output order (contract §6). `time` is added by the writer.
pub const AUDIT_FIELDS: [&str; 15] = [
    "time",
    "unique_id",
    "src",
    "method",
    "host",
    "path",
    "issuer",
    "sub",
    "email",
    "rule",
    "principal",
    "allow",
    "status",
    "reason",
    "latency_us",
];

/// Longest value (in bytes) of a string field in an audit line. Caller-controlled text (`path`,
/// `host`, `unique_id`) can be as long as HAProxy's buffer allows; capping it keeps one request
/// from producing a multi-kilobyte line and keeps log pipelines' line limits (often 16 KiB)
/// out of reach. 1 KiB holds any sane path, and a truncated value ends with `...`.
pub const AUDIT_FIELD_MAX_BYTES: usize = 1024;

/// Lines buffered per log destination. Sized for a few seconds of a busy agent's audit log (one
/// line per decision) while journald or a disk stalls. Past it, new lines are **dropped and
/// counted** (`idgate_log_lines_dropped_total{stream}`, alert `IdgateLogLinesDropped`), never
/// waited for: a blocking write would stall the Tokio worker that emitted the line, and with
/// it every SPOP connection scheduled on that worker, turning a slow disk into denied (or, past
/// HAProxy's processing timeout, failed) requests for everyone. Decisions never depend on the
/// log; an operator who needs a complete audit trail sizes the destination for the load and
/// alerts on the counter.
pub const LOG_BUFFER_LINES: usize = 128_000;

/// Drop counters of the non-blocking writers, by stream, for the metrics.
static DROP_COUNTERS: Mutex<Vec<(&'static str, tracing_appender::non_blocking::ErrorCounter)>> =
    Mutex::new(Vec::new());

/// Lines dropped so far per stream (`log`: diagnostics, and the audit log when it shares
/// stderr; `audit`: a separate audit destination).
pub fn dropped_lines() -> Vec<(&'static str, u64)> {
    let counters = DROP_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(&'static str, u64)> = Vec::with_capacity(2);
    for (stream, c) in counters.iter() {
        let n = c.dropped_lines() as u64;
        match out.iter_mut().find(|(s, _)| s == stream) {
            Some((_, total)) => *total += n,
            None => out.push((stream, n)),
        }
    }
    out
}

/// Set when an audit destination other than `off` is configured. Checked before anything else
/// in [`audit_decision`], so a disabled audit log costs one relaxed atomic load per decision.
static AUDIT_ENABLED: AtomicBool = AtomicBool::new(false);

/// Output format of the diagnostic logs (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours when stderr is a terminal).
    Text,
    /// One JSON object per line.
    Json,
    /// `text` when stderr is a terminal, else `json` (journald, containers, log shippers).
    #[default]
    Auto,
}

impl LogFormat {
    /// Resolve [`LogFormat::Auto`] against whether stderr is a terminal.
    fn resolve(self, stderr_is_terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_terminal => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "auto" => Ok(LogFormat::Auto),
            _ => Err(TelemetryError::Format(s.to_owned())),
        }
    }
}

/// Where the audit log goes (`[log] audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Off,
    Stderr,
    Stdout,
    File(PathBuf),
}

impl AuditTarget {
    /// `"off"`, `"stderr"`, `"stdout"`, anything else is a file path. An empty string is an
    /// error rather than "off": it is more likely a templating mistake than an intent.
    pub fn parse(s: &str) -> Result<AuditTarget, TelemetryError> {
        match s {
            "off" => Ok(AuditTarget::Off),
            "stderr" => Ok(AuditTarget::Stderr),
            "stdout" => Ok(AuditTarget::Stdout),
            "" => Err(TelemetryError::AuditTarget),
            path => Ok(AuditTarget::File(PathBuf::from(path))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--log-format` is not one of the known words.
    #[error("unknown log format {0:?} (expected text, json or auto)")]
    Format(String),
    /// `RUST_LOG` or `[log] level` is not a valid filter.
    #[error("invalid log filter {filter:?} (from {origin}): {message}")]
    Filter {
        filter: String,
        origin: &'static str,
        message: String,
    },
    /// `[log] audit` is empty.
    #[error("[log] audit must be \"stderr\", \"stdout\", \"off\" or a file path")]
    AuditTarget,
    /// The audit file cannot be opened for appending.
    #[error("cannot open audit log {path}: {source}")]
    AuditFile { path: PathBuf, source: io::Error },
    /// A global subscriber is already installed (init called twice).
    #[error("logging is already initialised")]
    AlreadyInitialized,
}

/// Validate a `[log] level` value without installing anything (for `check-config`).
pub fn validate_level(level: &str) -> Result<(), TelemetryError> {
    parse_filter(level, "[log] level").map(|_| ())
}

fn parse_filter(filter: &str, origin: &'static str) -> Result<EnvFilter, TelemetryError> {
    // tracing-subscriber 0.3's directive parser slices at byte offsets and panics on a
    // multi-byte character in some positions (found by the `config_parse` fuzz target:
    // `level = "    С $ [["`), which on a SIGHUP reload would take the agent down instead of
    // keeping the old config. No useful directive needs non-ASCII (targets are Rust module
    // paths, levels are words), so such a filter is refused before it gets there.
    if !filter.is_ascii() {
        return Err(TelemetryError::Filter {
            filter: filter.escape_default().to_string(),
            origin,
            message: "only ASCII characters are allowed".to_owned(),
        });
    }
    EnvFilter::builder()
        .parse(filter)
        .map(|f| f.add_directive(audit_off()))
        .map_err(|e| TelemetryError::Filter {
            filter: filter.to_owned(),
            origin,
            message: e.to_string(),
        })
}

/// `RUST_LOG` when it is set to something other than blanks: it then governs the level,
/// whatever the config file says.
fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The filter for one-shot commands (`idgate explain`): `RUST_LOG` when it is set and valid,
/// else `default`.
pub fn command_filter(default: &str) -> EnvFilter {
    rust_log()
        .and_then(|v| parse_filter(&v, "RUST_LOG").ok())
        .or_else(|| parse_filter(default, "default").ok())
        .unwrap_or_else(|| EnvFilter::new("warn"))
}

/// Audit events are written by their own layer; the diagnostic layer never shows them, even
/// if `RUST_LOG` names the target.
fn audit_off() -> tracing_subscriber::filter::Directive {
    "audit=off".parse().expect("static directive")
}

/// Keeps the log writer threads alive (dropping it flushes them) and gives access to what can
/// change at run time. Hold it in `main` for the life of the process.
pub struct TelemetryGuard {
    _workers: Vec<WorkerGuard>,
    /// `None` when `RUST_LOG` governs the level: the environment wins over the config file.
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    audit_file: Option<AuditFile>,
}

impl TelemetryGuard {
    /// Apply a new `[log] level` after a config reload. Returns `Ok(false)` when `RUST_LOG` is
    /// set (it keeps precedence), `Ok(true)` when the level was changed.
    pub fn set_level(&self, level: &str) -> Result<bool, TelemetryError> {
        let Some(handle) = &self.filter else {
            return Ok(false);
        };
        let filter = parse_filter(level, "[log] level")?;
        handle
            .reload(filter)
            .map_err(|e| TelemetryError::Filter {
                filter: level.to_owned(),
                origin: "[log] level",
                message: e.to_string(),
            })
            .map(|()| true)
    }

    /// Reopen the audit file (after logrotate moved it away; call it on SIGHUP). A no-op when
    /// the audit log is not a file.
    pub fn reopen_audit(&self) -> io::Result<()> {
        match &self.audit_file {
            Some(f) => f.reopen(),
            None => Ok(()),
        }
    }
}

/// Install the global tracing subscriber.
///
/// * `format`: `--log-format`; [`LogFormat::Auto`] picks JSON when stderr is not a terminal.
/// * `level_from_config`: `[log] level`, used only when `RUST_LOG` is unset or empty.
/// * `audit`: `[log] audit`, see [`AuditTarget::parse`]. A file is opened for appending (created
///   with mode 0640) before anything is installed, so a bad path fails startup cleanly.
///
/// # Errors
/// An invalid filter, an unopenable audit file, or a second call.
pub fn init(
    format: LogFormat,
    level_from_config: &str,
    audit: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    let (filter, from_config) = match rust_log() {
        Some(env) => (parse_filter(&env, "RUST_LOG")?, false),
        None => (parse_filter(level_from_config, "[log] level")?, true),
    };
    let audit_target = AuditTarget::parse(audit)?;
    let audit_file = match &audit_target {
        AuditTarget::File(path) => Some(AuditFile::open(path)?),
        _ => None,
    };

    let stderr_tty = io::stderr().is_terminal();
    let mut workers = Vec::new();
    let (stderr, guard) = non_blocking(io::stderr(), "log");
    workers.push(guard);

    let (filter, handle) = reload::Layer::new(filter);
    let diagnostics = match format.resolve(stderr_tty) {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(stderr.clone())
            .boxed(),
        _ => tracing_subscriber::fmt::layer()
            .with_ansi(stderr_tty)
            .with_writer(stderr.clone())
            .boxed(),
    }
    .with_filter(filter);

    let audit_writer = match &audit_target {
        AuditTarget::Off => None,
        // Shares the diagnostics' writer: one thread, lines never interleave mid-line.
        AuditTarget::Stderr => Some(stderr),
        AuditTarget::Stdout => {
            let (w, g) = non_blocking(io::stdout(), "audit");
            workers.push(g);
            Some(w)
        }
        AuditTarget::File(_) => {
            let (w, g) = non_blocking(audit_file.clone().expect("opened above"), "audit");
            workers.push(g);
            Some(w)
        }
    };
    let audit_layer = audit_writer
        .map(|w| AuditLayer::new(w).with_filter(filter_fn(|meta| meta.target() == AUDIT_TARGET)));

    tracing_subscriber::registry()
        .with(diagnostics)
        .with(audit_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialized)?;
    AUDIT_ENABLED.store(audit_target != AuditTarget::Off, Ordering::Relaxed);

    Ok(TelemetryGuard {
        _workers: workers,
        filter: from_config.then_some(handle),
        audit_file,
    })
}

/// A writer thread for `w` that never blocks its callers: see [`LOG_BUFFER_LINES`].
fn non_blocking<W: Write + Send + 'static>(
    w: W,
    stream: &'static str,
) -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = lossy_writer(w, LOG_BUFFER_LINES);
    DROP_COUNTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((stream, writer.error_counter()));
    (writer, guard)
}

fn lossy_writer<W: Write + Send + 'static>(w: W, lines: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines)
        .thread_name("idgate-log")
        .finish(w)
}

/// An append-only file that can be reopened in place (log rotation). Cloned into the writer
/// thread; the [`TelemetryGuard`] keeps another clone to call [`AuditFile::reopen`].
#[derive(Clone)]
struct AuditFile {
    path: Arc<Path>,
    file: Arc<Mutex<File>>,
}

impl AuditFile {
    fn open(path: &Path) -> Result<AuditFile, TelemetryError> {
        Ok(AuditFile {
            path: path.into(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path).map_err(|e| match e {
            TelemetryError::AuditFile { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, TelemetryError> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
    opts.open(path).map_err(|source| TelemetryError::AuditFile {
        path: path.to_owned(),
        source,
    })
}

impl Write for AuditFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One lock per line, so a reopen never splits a line across two files.
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// Emit the audit line of one decision (contract §6). Call it once per NOTIFY, after the
/// verdict is known. Costs one atomic load when the audit log is off.
///
/// Only these values are taken: from `req` the `unique_id`, `src`, `method`, `host` and
/// `path` (never `authorization` or `cookie`); from `verdict` the identity's issuer name, `sub`
/// and `email`, the rule, principal, allow, status and reason (never `upstream_authorization`
/// or `www_authenticate`).
pub fn audit_decision(req: &AuthzRequest, verdict: &Verdict, latency: Duration) {
    if !AUDIT_ENABLED.load(Ordering::Relaxed) {
        return;
    }
    emit_audit(req, verdict, latency);
}

fn emit_audit(req: &AuthzRequest, verdict: &Verdict, latency: Duration) {
    let identity = verdict.identity.as_deref();
    // `IpAddr` has no tracing `Value` impl; recorded via Display.
    let src = req.src.map(tracing::field::display);
    tracing::info!(
        target: AUDIT_TARGET,
        unique_id = req.unique_id.as_deref(),
        src,
        method = req.method.as_deref(),
        host = req.host.as_deref(),
        path = req.path.as_deref(),
        issuer = identity.map(|i| &*i.issuer),
        sub = identity.map(|i| i.sub.as_str()),
        email = identity.and_then(|i| i.email.as_deref()),
        rule = verdict.rule.as_deref(),
        principal = verdict.principal.as_deref(),
        allow = verdict.allow,
        status = u64::from(verdict.status),
        reason = verdict.reason.as_str(),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    );
}

/// Writes audit events as one JSON object per line with exactly [`AUDIT_FIELDS`].
pub struct AuditLayer<W> {
    make_writer: W,
}

impl<W> AuditLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    pub fn new(make_writer: W) -> Self {
        AuditLayer { make_writer }
    }
}

impl<S, W> Layer<S> for AuditLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != AUDIT_TARGET {
            return;
        }
        let mut fields = AuditFields::default();
        event.record(&mut fields);
        let line = fields.to_line(SystemTime::now());
        // A failed audit write has nowhere better to be reported than stderr, and doing so
        // through tracing could recurse; the writer is non-blocking, so failures are rare.
        let _ = self.make_writer.make_writer().write_all(line.as_bytes());
    }
}

/// JSON-encoded values by position in [`AUDIT_FIELDS`] (`None` is written as `null`).
#[derive(Default)]
struct AuditFields {
    values: [Option<String>; AUDIT_FIELDS.len()],
}

impl AuditFields {
    fn slot(&mut self, field: &Field) -> Option<&mut Option<String>> {
        // `time` (index 0) is the writer's, never the caller's.
        let i = AUDIT_FIELDS
            .iter()
            .skip(1)
            .position(|f| *f == field.name())?
            + 1;
        Some(&mut self.values[i])
    }

    fn to_line(&self, now: SystemTime) -> String {
        let mut line = String::with_capacity(320);
        line.push('{');
        for (i, name) in AUDIT_FIELDS.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "\"{name}\":");
            if i == 0 {
                let _ = write!(line, "\"{}\"", humantime::format_rfc3339_micros(now));
            } else {
                line.push_str(self.values[i].as_deref().unwrap_or("null"));
            }
        }
        line.push_str("}\n");
        line
    }
}

/// Truncate to at most `max` bytes on a char boundary, marking the cut with `...`.
fn cap(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end]).into()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(&cap(s, AUDIT_FIELD_MAX_BYTES)).expect("strings always serialize")
}

impl Visit for AuditFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(slot) = self.slot(field) {
            *slot = Some(json_str(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if let Some(slot) = self.slot(field) {
            *slot = Some(value.to_string());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if let Some(slot) = self.slot(field) {
            *slot = Some(value.to_string());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Some(slot) = self.slot(field) {
            *slot = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if let Some(slot) = self.slot(field) {
            *slot = Some(json_str(&format!("{value:?}")));
        }
    }
}

/// An error and its sources on one line, each source once ("error sending request: client error
/// (Connect): tcp connect error: Connection refused (os error 111)"): what the JWKS fetches and
/// the token endpoint calls log as the cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// What [`RateLimitedLog::admit`] decided for one would-be log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Log it.
    Log,
    /// Log it; the previous interval suppressed this many lines of the same key.
    LogAfterSuppressed(u64),
    /// Drop it (counted, and reported when the key is next admitted).
    Suppress,
}

impl Admission {
    pub fn is_log(self) -> bool {
        !matches!(self, Admission::Suppress)
    }
}

/// Most keys a [`RateLimitedLog`] tracks. Keys are meant to come from bounded sets (an issuer
/// name, an error class); this cap makes a caller that passes unbounded text cost memory no
/// more than a few hundred KiB. When full, expired windows are evicted; if none is, the line
/// is logged unlimited rather than lost.
pub const RATE_LIMIT_MAX_KEYS: usize = 4096;

/// Rate limiter for repetitive error logs: per key, at most `burst` lines per `interval`;
/// further lines in that interval are counted, and the first line admitted afterwards is
/// preceded by one `suppressed N similar messages` warning.
///
/// Why this exists: an unreachable IdP or a client hammering with a broken token would
/// otherwise produce one identical line per request, flooding journald and hiding everything
/// else. Use it for per-request warnings, not for one-off events.
///
/// ```
/// use std::time::Duration;
/// use idgate::telemetry::RateLimitedLog;
/// static JWKS_ERRORS: std::sync::LazyLock<RateLimitedLog> =
///     std::sync::LazyLock::new(|| RateLimitedLog::new(5, Duration::from_secs(60)));
/// if JWKS_ERRORS.admit("corp").is_log() {
///     tracing::warn!(issuer = "corp", "JWKS refresh failed");
/// }
/// ```
pub struct RateLimitedLog {
    burst: u32,
    interval: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    /// At most `burst` lines per key per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        RateLimitedLog {
            burst,
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Decide about one line of `key` now; when a suppression period just ended, this also
    /// emits the `suppressed N similar messages` warning (target of this module, field `key`).
    pub fn admit(&self, key: &str) -> Admission {
        let admission = self.admit_at(key, Instant::now());
        if let Admission::LogAfterSuppressed(n) = admission {
            tracing::warn!(key, suppressed = n, "suppressed {n} similar messages");
        }
        admission
    }

    /// For callers that put the count in their own line: `Some(lines suppressed since the
    /// last admitted one)` when a line of `kind` (and `label`, e.g. a status) may be logged
    /// now, `None` when it is suppressed. No separate summary line is emitted.
    pub fn allow(&self, kind: &str, label: &str) -> Option<u64> {
        let key = if label.is_empty() {
            std::borrow::Cow::Borrowed(kind)
        } else {
            std::borrow::Cow::Owned(format!("{kind}/{label}"))
        };
        match self.admit_at(&key, Instant::now()) {
            Admission::Log => Some(0),
            Admission::LogAfterSuppressed(n) => Some(n),
            Admission::Suppress => None,
        }
    }

    /// [`RateLimitedLog::admit`] with an explicit clock and without logging (for tests and for
    /// callers that want to print the summary themselves).
    pub fn admit_at(&self, key: &str, now: Instant) -> Admission {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(key) {
            if windows.len() >= RATE_LIMIT_MAX_KEYS {
                let interval = self.interval;
                windows.retain(|_, w| now.saturating_duration_since(w.started) < interval);
                if windows.len() >= RATE_LIMIT_MAX_KEYS {
                    return Admission::Log;
                }
            }
            windows.insert(
                key.to_owned(),
                Window {
                    started: now,
                    logged: 0,
                    suppressed: 0,
                },
            );
        }
        let w = windows.get_mut(key).expect("inserted above");
        let mut carried = 0;
        if now.saturating_duration_since(w.started) >= self.interval {
            carried = w.suppressed;
            *w = Window {
                started: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < self.burst {
            w.logged += 1;
            if carried > 0 {
                Admission::LogAfterSuppressed(carried)
            } else {
                Admission::Log
            }
        } else {
            w.suppressed += 1;
            Admission::Suppress
        }
    }
}

#[cfg(test)]
mod tests {

    /// A destination that accepts nothing until released (a stalled disk or journald).
    struct Stalled(Arc<(Mutex<bool>, std::sync::Condvar)>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_destination_never_blocks_the_caller_and_drops_are_counted() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (writer, guard) = lossy_writer(Stalled(gate.clone()), 8);
        let counter = writer.error_counter();
        let started = Instant::now();
        for i in 0..1000 {
            let mut w = writer.make_writer();
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        // 1000 writes against a destination that takes none: with a blocking writer this
        // would hang for good; lossy, it returns at once.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let dropped = counter.dropped_lines();
        assert!(dropped >= 1000 - 8 - 1, "dropped {dropped}");
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
        drop(writer);
        drop(guard);
    }

    #[test]
    fn dropped_lines_are_summed_per_stream() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (w, g) = non_blocking(Stalled(gate.clone()), "audit");
        let before = dropped_lines()
            .into_iter()
            .find(|(s, _)| *s == "audit")
            .map_or(0, |(_, n)| n);
        for _ in 0..(LOG_BUFFER_LINES + 10) {
            let _ = w.make_writer().write_all(b"x\n");
        }
        let after = dropped_lines()
            .into_iter()
            .find(|(s, _)| *s == "audit")
            .map_or(0, |(_, n)| n);
        assert!(after >= before + 9, "before {before}, after {after}");
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
        drop(w);
        drop(g);
    }
    use super::*;
    use crate::decision::{Identity, Reason};
    use std::net::IpAddr;

    /// A `MakeWriter` that appends everything to a shared buffer.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture_audit(f: impl FnOnce()) -> String {
        let cap = Capture::default();
        let sub = tracing_subscriber::registry().with(
            AuditLayer::new(cap.clone())
                .with_filter(filter_fn(|meta| meta.target() == AUDIT_TARGET)),
        );
        tracing::subscriber::with_default(sub, f);
        cap.text()
    }

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
    const UPSTREAM: &str = "Bearer dapi0123456789abcdef-secret";

    fn allowed() -> (AuthzRequest, Verdict) {
        let req = AuthzRequest {
            method: Some("POST".into()),
            path: Some("/serving-endpoints/x/invocations".into()),
            host: Some("dbc.example.com".into()),
            authorization: Some(format!("Bearer {TOKEN}").into()),
            cookie: Some("session=cookie-secret-value".into()),
            src: Some("192.0.2.7".parse::<IpAddr>().unwrap()),
            unique_id: Some("abc-123".into()),
            ..AuthzRequest::default()
        };
        let identity = Identity {
            issuer: "corp".into(),
            sub: "alice".into(),
            user: None,
            email: Some("alice@example.com".into()),
            groups: vec!["ml".into()],
            scopes: vec![],
            expires_at: 0,
            issued_at: None,
            jti: None,
            claims: Default::default(),
        };
        let verdict = Verdict {
            identity: Some(Arc::new(identity)),
            rule: Some("serving-invoke".into()),
            principal: Some("sp-serving".into()),
            upstream_authorization: Some(UPSTREAM.into()),
            www_authenticate: None,
            ..Verdict::allow(Reason::Ok)
        };
        (req, verdict)
    }

    #[test]
    fn audit_line_has_exactly_the_contract_fields_and_no_secrets() {
        let (req, verdict) = allowed();
        let out = capture_audit(|| emit_audit(&req, &verdict, Duration::from_micros(1234)));
        assert_eq!(out.lines().count(), 1, "one line per decision: {out}");
        for secret in [
            TOKEN,
            "eyJ",
            "c2lnbmF0dXJl",
            "Bearer",
            "dapi",
            "cookie-secret",
        ] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        let obj = v.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut expected = AUDIT_FIELDS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "serde_json::Map sorts keys");
        assert!(out.starts_with("{\"time\":\""), "time comes first: {out}");
        assert_eq!(obj["unique_id"], "abc-123");
        assert_eq!(obj["src"], "192.0.2.7");
        assert_eq!(obj["method"], "POST");
        assert_eq!(obj["host"], "dbc.example.com");
        assert_eq!(obj["path"], "/serving-endpoints/x/invocations");
        assert_eq!(obj["issuer"], "corp");
        assert_eq!(obj["sub"], "alice");
        assert_eq!(obj["email"], "alice@example.com");
        assert_eq!(obj["rule"], "serving-invoke");
        assert_eq!(obj["principal"], "sp-serving");
        assert_eq!(obj["allow"], true);
        assert_eq!(obj["status"], 200);
        assert_eq!(obj["reason"], "ok");
        assert_eq!(obj["latency_us"], 1234);
        let time = obj["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert!(time.ends_with('Z'), "UTC: {time}");
    }

    #[test]
    fn audit_absent_values_are_null_and_caller_text_is_escaped_and_capped() {
        let long_path = format!("/a\"b\\c\n\u{1}{}", "é".repeat(2000));
        let req = AuthzRequest {
            method: Some("GET".into()),
            path: Some(long_path.into()),
            ..Default::default()
        };
        let verdict = Verdict::deny(Reason::MissingToken);
        let out = capture_audit(|| emit_audit(&req, &verdict, Duration::ZERO));
        assert_eq!(out.lines().count(), 1, "newline in a value must be escaped");
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        for absent in ["unique_id", "src", "host", "issuer", "sub", "email", "rule"] {
            assert!(v[absent].is_null(), "{absent}: {v}");
        }
        let path = v["path"].as_str().unwrap();
        assert!(path.starts_with("/a\"b\\c\n\u{1}é"), "{path:?}");
        assert!(path.len() <= AUDIT_FIELD_MAX_BYTES, "{}", path.len());
        assert!(path.ends_with("..."));
        assert_eq!(v["allow"], false);
        assert_eq!(v["status"], 401);
        assert_eq!(v["reason"], "missing_token");
    }

    #[test]
    fn audit_layer_drops_unknown_fields_and_other_targets() {
        let out = capture_audit(|| {
            tracing::info!(target: AUDIT_TARGET, authorization = TOKEN, time = "forged", sub = "bob");
            tracing::info!(target: "idgate::engine", sub = "carol", "not an audit event");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains(TOKEN) && !out.contains("forged") && !out.contains("carol"));
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["sub"], "bob");
    }

    #[test]
    fn disabled_audit_emits_nothing() {
        // AUDIT_ENABLED is only set by `init`, which unit tests never call.
        let (req, verdict) = allowed();
        let out = capture_audit(|| audit_decision(&req, &verdict, Duration::ZERO));
        assert_eq!(out, "");
    }

    #[test]
    fn cap_respects_char_boundaries() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("abcdefghij", 10), "abcdefghij");
        assert_eq!(cap("abcdefghijk", 10), "abcdefg...");
        // 'é' is two bytes: a cut inside it moves left.
        let c = cap("ééééé", 6);
        assert_eq!(c, "é...");
    }

    #[test]
    fn error_chains_list_each_source_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "dns error",
                Some(Box::new(E(
                    "dns error",
                    Some(Box::new(E("not known", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "error sending request: dns error: not known"
        );
    }

    #[test]
    fn allow_counts_per_kind_and_label() {
        let l = RateLimitedLog::new(2, Duration::from_secs(3600));
        assert_eq!(l.allow("protocol_error", "4"), Some(0));
        assert_eq!(l.allow("protocol_error", "4"), Some(0));
        assert_eq!(l.allow("protocol_error", "4"), None);
        assert_eq!(
            l.allow("protocol_error", "10"),
            Some(0),
            "own bucket per label"
        );
        assert_eq!(l.allow("io", ""), Some(0), "own bucket per kind");
        // The suppressed count arrives with the next admitted line of that key.
        let t0 = Instant::now();
        let k = RateLimitedLog::new(1, Duration::from_secs(1));
        assert_eq!(k.admit_at("k", t0), Admission::Log);
        assert_eq!(k.admit_at("k", t0), Admission::Suppress);
        assert_eq!(
            k.admit_at("k", t0 + Duration::from_secs(1)),
            Admission::LogAfterSuppressed(1)
        );
    }

    #[test]
    fn rate_limiter_admits_burst_then_suppresses_then_reports() {
        let rl = RateLimitedLog::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.admit_at("k", t0), Admission::Log);
        }
        for i in 0..5 {
            assert_eq!(
                rl.admit_at("k", t0 + Duration::from_secs(i)),
                Admission::Suppress
            );
        }
        // Another key has its own budget.
        assert_eq!(rl.admit_at("other", t0), Admission::Log);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(rl.admit_at("k", t1), Admission::LogAfterSuppressed(5));
        assert_eq!(rl.admit_at("k", t1), Admission::Log);
        // A quiet interval carries nothing over.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(rl.admit_at("k", t2), Admission::Log);
    }

    #[test]
    fn rate_limiter_key_table_is_bounded() {
        let rl = RateLimitedLog::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..RATE_LIMIT_MAX_KEYS + 10 {
            assert!(rl.admit_at(&format!("k{i}"), t0).is_log());
        }
        assert_eq!(rl.windows.lock().unwrap().len(), RATE_LIMIT_MAX_KEYS);
        // Once windows expire, new keys evict them.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(rl.admit_at("fresh", later), Admission::Log);
        assert_eq!(rl.windows.lock().unwrap().len(), 1);
    }

    #[test]
    fn formats_and_targets_parse() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(false), LogFormat::Text);
        assert_eq!(AuditTarget::parse("off").unwrap(), AuditTarget::Off);
        assert_eq!(
            AuditTarget::parse("/var/log/idgate/audit.log").unwrap(),
            AuditTarget::File("/var/log/idgate/audit.log".into())
        );
        assert!(AuditTarget::parse("").is_err());
        assert!(validate_level("info,idgate=debug").is_ok());
        assert!(validate_level("info,idgate=loud").is_err());
    }

    /// Found by the `config_parse` fuzz target: tracing-subscriber's directive parser panics on
    /// this (a byte-offset slice inside `С`); it must be a config problem instead.
    #[test]
    fn non_ascii_filters_are_refused_not_panicked_on() {
        let e = validate_level("    \u{421} $ [[ , #  s0").unwrap_err();
        assert!(e.to_string().contains("only ASCII"), "{e}");
        assert!(validate_level("info,idgate=d\u{e9}bug").is_err());
        assert!(command_filter("warn").to_string().contains("audit=off"));
    }

    #[test]
    fn audit_file_appends_and_reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut f = AuditFile::open(&path).unwrap();
        f.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        f.write_all(b"two\n").unwrap(); // still the rotated file
        f.reopen().unwrap();
        f.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
