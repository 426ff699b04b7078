//! The `idgate` binary: command line (contract §1), logging, then the agent.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use idgate::config::{self, Config, ConfigError};
use idgate::engine::Engine;
use idgate::explain::{self, ExplainRequest};
use idgate::telemetry::{self, LogFormat, TelemetryGuard};
use idgate::{auth, metrics, reload, server, signal, systemd};

mod revoke_cmd;

#[derive(Debug, Parser)]
#[command(name = "idgate", version, about = "Identity-aware HAProxy SPOE agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground (logs to stderr).
    Run {
        /// Configuration file. Without -c, /etc/idgate/idgate.toml is used if it exists,
        /// else the embedded default (loopback only, refuses every request).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Log format: text, json, or auto (json when stderr is not a terminal).
        #[arg(long, value_name = "FORMAT", default_value = "auto")]
        log_format: LogFormat,
    },
    /// Parse and validate a configuration file; exit 0 if valid, else 1 with one line per problem.
    CheckConfig {
        /// Configuration file to check.
        #[arg(short = 'c', long = "config", value_name = "FILE", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Evaluate one request exactly as the agent would and print the decision as JSON.
    /// Exit 0 allow, 1 deny, 2 usage or configuration error.
    Explain {
        /// Configuration file, as the agent would load it.
        #[arg(short = 'c', long = "config", value_name = "FILE", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// HTTP method, e.g. GET or POST (upper-cased: HTTP clients send methods in capitals).
        #[arg(long)]
        method: String,
        /// Request path as the client sends it (percent-encoding included), e.g.
        /// /serving-endpoints/churn/invocations.
        #[arg(long)]
        path: String,
        /// The request's Host header (for rules with `hosts`); absent: no Host.
        #[arg(long)]
        host: Option<String>,
        /// The bearer token (without "Bearer ").
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the bearer token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The client address (for `sources` conditions).
        #[arg(long)]
        src: Option<std::net::IpAddr>,
        /// Decide policy only: do not contact upstream token endpoints (Databricks); an
        /// allowed rule's upstream is named instead of its credential.
        #[arg(long)]
        policy_only: bool,
        /// The request body (JSON), sent as HAProxy sends a serving invocation's body, for
        /// rules with `payload` (docs/payload.md). Without it, a POST such a rule allows is
        /// refused as the agent refuses one whose body did not reach it.
        #[arg(long, value_name = "FILE")]
        body_file: Option<PathBuf>,
    },
    /// Revoke a subject, one token, or everything an issuer issued before a time, on every
    /// agent that shares the `[shared]` store (or, on one node, its revocations_file).
    Revoke {
        /// Configuration file (where the store is, and the issuers).
        #[arg(short = 'c', long = "config", value_name = "FILE", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// The configured issuer's `name`.
        #[arg(long)]
        issuer: String,
        /// Every token of this subject (`sub`, or the issuer's `user_claim` value).
        #[arg(long, group = "target")]
        subject: Option<String>,
        /// The one token with this `jti`.
        #[arg(long, group = "target")]
        jti: Option<String>,
        /// Every token issued (`iat`) before this time, RFC 3339 in UTC, e.g.
        /// 2026-12-05T03:00:00Z. Tokens without `iat` are revoked too.
        #[arg(long, group = "target", value_name = "RFC3339")]
        issued_before: Option<String>,
        /// How long the revocation lasts, e.g. 2h. Default: until every token it targets has
        /// expired (the issuer's max_token_lifetime plus leeway).
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
        for_: Option<String>,
        /// Until this time (RFC 3339, UTC), plus the issuer's leeway: e.g. the revoked token's
        /// `exp`, for a token without `iat` that outlives the default.
        #[arg(long, value_name = "RFC3339")]
        until: Option<String>,
    },
    /// List the revocations in force in the configured store.
    Revocations {
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "FILE", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // jsonwebtoken 11 picks a crypto provider from its features only when exactly one is
    // enabled and panics at first use otherwise: install ours explicitly.
    auth::install_crypto_provider();
    match cli.command {
        Command::Run { config, log_format } => run(config.as_deref(), log_format),
        Command::Revoke {
            config,
            issuer,
            subject,
            jti,
            issued_before,
            for_,
            until,
        } => revoke_cmd::revoke(
            &config,
            &issuer,
            revoke_cmd::Target {
                subject,
                jti,
                issued_before,
            },
            for_.as_deref(),
            until.as_deref(),
        ),
        Command::Revocations { config, json } => revoke_cmd::list(&config, json),
        Command::CheckConfig { config } => check_config(&config),
        Command::Explain {
            config,
            method,
            path,
            host,
            token,
            token_file,
            src,
            policy_only,
            body_file,
        } => {
            let body = match body_file.map(std::fs::read).transpose() {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("idgate: cannot read the body file: {e}");
                    return ExitCode::from(2);
                }
            };
            let token = match (token, token_file) {
                (Some(t), _) => Some(t),
                (None, Some(f)) => match std::fs::read_to_string(&f) {
                    Ok(t) => Some(t.trim().to_string()),
                    Err(e) => {
                        eprintln!("idgate: cannot read {}: {e}", f.display());
                        return ExitCode::from(2);
                    }
                },
                (None, None) => None,
            };
            let upper = method.to_ascii_uppercase();
            if upper != method {
                eprintln!("idgate: method {method:?} taken as {upper:?}");
            }
            explain_cmd(
                &config,
                ExplainRequest {
                    method: upper,
                    path,
                    host,
                    token,
                    src,
                    policy_only,
                    body,
                },
            )
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// `idgate check-config`: everything `run` would check (syntax, every section, rules,
/// upstream secret files and URLs), reporting every problem of every section in one run,
/// without binding or fetching anything: the state is built outside a Tokio runtime, so no
/// JWKS refresher or token refresh starts.
fn check_config(path: &Path) -> ExitCode {
    // Warnings found while building the state (a world-readable secret file, a Unix socket
    // mode every user may connect to...) go to stderr, as the agent would log them.
    command_logging();
    match check(path) {
        Ok(()) => {
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> Result<(), ConfigError> {
    // Every problem of every section, each once (the configuration layer is the only place
    // that checks); then the upstreams read their secret files, as at start.
    let cfg = Config::load(path)?;
    warn_socket_mode(&cfg.spop);
    if let Some(w) = cfg
        .shared
        .revocations_file
        .as_deref()
        .and_then(idgate::revocation::file::writable_by_others)
    {
        tracing::warn!("shared.revocations_file: {w}");
    }
    let source = path.display().to_string();
    idgate::engine::State::build(cfg, &source, None, Engine::http_client()).map(drop)
}

/// A Unix socket every local user may connect to hands out upstream credentials: say so (at
/// start and in check-config).
fn warn_socket_mode(spop: &idgate::config::SpopConfig) {
    if let (Some(mode), idgate::config::ListenAddr::Unix(path)) = (spop.socket_mode, &spop.listen) {
        if mode.is_world_connectable() {
            tracing::warn!(
                path = %path.display(),
                "spop.socket_mode {mode} lets every local user connect to the SPOP socket and \
                 obtain upstream credentials for any valid token; use 0660 with socket_group"
            );
        }
    }
}

/// Logging for the one-shot commands: warnings and up to stderr (RUST_LOG overrides), colour
/// only on a terminal (captured stderr in CI logs and tickets gets plain text).
fn command_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(telemetry::command_filter("warn"))
        .try_init();
}

fn explain_cmd(path: &Path, req: ExplainRequest) -> ExitCode {
    // Diagnostics (JWKS fetch failures...) go to stderr; the JSON report to stdout.
    command_logging();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("idgate: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(explain::explain(Some(path), req)) {
        Ok((allow, report)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("JSON value serializes")
            );
            ExitCode::from(if allow { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Load the configuration for `run`: the given file, else the default path if it exists,
/// else the embedded default. Returns the path reloads re-read.
fn load_config(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), String> {
    let path = match path {
        Some(p) => p,
        None if Path::new(config::DEFAULT_PATH).exists() => Path::new(config::DEFAULT_PATH),
        None => return Ok((Config::embedded(), None)),
    };
    Config::load(path)
        .map(|c| (c, Some(path.to_path_buf())))
        .map_err(|e| e.to_string())
}

/// `idgate run`: serve until SIGTERM/SIGINT, then drain.
fn run(config_path: Option<&Path>, log_format: LogFormat) -> ExitCode {
    let (cfg, path) = match load_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let guard = match telemetry::init(log_format, &cfg.log.level, &cfg.log.audit) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("idgate: logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("idgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(serve(cfg, path, guard));
    // Background tasks (JWKS refresh, token refresh) are cancelled with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn serve(cfg: Config, path: Option<PathBuf>, guard: TelemetryGuard) -> ExitCode {
    let spop_cfg = cfg.spop.clone();
    let admin_addr = cfg.admin.listen;
    // Bound once, here: a reload never rebinds (see reload::restart_only_changes). A Unix socket
    // gets its mode and owner before it accepts anything (server::bind_unix).
    let listener = match server::bind_listener(&spop_cfg) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {} (spop.listen): {e}", spop_cfg.listen);
            return ExitCode::FAILURE;
        }
    };
    warn_socket_mode(&spop_cfg);
    let admin_listener = match tokio::net::TcpListener::bind(admin_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {admin_addr} (admin.listen): {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = match Engine::new(cfg, path, Engine::http_client()) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            tracing::error!("invalid configuration:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    engine.follow_revocations();
    engine.set_listener_up();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        spop = %listener.local_addr().map_or_else(|_| spop_cfg.listen.to_string(), |a| a.to_string()),
        admin = %admin_addr,
        config = %engine.config_path().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded default>".into()),
        "idgate started"
    );
    if let Some(w) = engine.state().refuses_everything() {
        tracing::warn!("{w}; see haproxy/idgate.toml for a starting point");
    }

    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ready_engine = engine.clone();
    let admin = tokio::spawn(metrics::admin::serve_admin(
        admin_listener,
        move || ready_engine.readiness(),
        async {
            let _ = admin_stop_rx.await;
        },
    ));
    let guard = Arc::new(guard);
    let reloader = tokio::spawn(reload::reload_on_sighup(engine.clone(), guard.clone()));
    systemd::notify_ready();
    let _watchdog = systemd::spawn_watchdog();

    server::serve(listener, spop_cfg, engine, signal::shutdown()).await;

    systemd::notify_stopping();
    reloader.abort();
    let _ = admin_stop_tx.send(());
    let _ = admin.await;
    tracing::info!("idgate stopped");
    drop(guard); // flushes the log writers
    ExitCode::SUCCESS
}
