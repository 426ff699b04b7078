//! The `idgate` binary: command line, logging, then the SPOP server (contract §1).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use idgate::authorize::FoundationAuthorizer;
use idgate::config::{self, Config};

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config.as_deref()),
    }
}

/// Load the configuration for `run`: the given file, else the default path if it exists,
/// else the embedded default.
fn load_config(path: Option<&Path>) -> Result<Config, String> {
    let path = match path {
        Some(p) => p,
        None if Path::new(config::DEFAULT_PATH).exists() => Path::new(config::DEFAULT_PATH),
        None => return Ok(Config::embedded()),
    };
    // `load` parses and validates; its error lists every problem with file and key.
    Config::load(path).map_err(|e| e.to_string())
}

fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in journald or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `idgate run`: serve until SIGTERM/SIGINT, then drain.
fn run(config_path: Option<&Path>) -> ExitCode {
    let cfg = match load_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("idgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&cfg.log.level);
    // jsonwebtoken 11 picks a crypto provider from its features only when exactly one is
    // enabled, and panics at first use otherwise; install ours explicitly so a feature
    // unified in by another dependency cannot turn token validation into a panic.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("idgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match idgate::server::bind(cfg.spop.listen, cfg.spop.backlog) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", cfg.spop.listen);
                return ExitCode::FAILURE;
            }
        };
        let authorizer = Arc::new(FoundationAuthorizer::new(cfg.auth.realm.clone()));
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "idgate starting");
        idgate::server::serve(listener, cfg.spop, authorizer, idgate::signal::shutdown()).await;
        ExitCode::SUCCESS
    })
}
